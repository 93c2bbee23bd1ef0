package api

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"

	"stele.dev/stele/app"
	"stele.dev/stele/projections"
)

// decodeJSON reads a request body of one JSON object into v, refusing
// unknown fields, trailing data and other media types. On failure it
// answers and returns false.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || mt != "application/json" {
			problem(w, r, http.StatusUnsupportedMediaType, "unsupported_media_type", "send application/json")
			return false
		}
	}
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil && dec.More() {
		err = errors.New("more than one JSON value")
	}
	if err == nil {
		if _, e := dec.Token(); e != io.EOF {
			err = errors.New("data after the JSON value")
		}
	}
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			problem(w, r, http.StatusRequestEntityTooLarge, "payload_too_large", fmt.Sprintf("the request body is over %d bytes", tooBig.Limit))
			return false
		}
		if errors.Is(err, io.EOF) {
			err = errors.New("empty body")
		}
		problem(w, r, http.StatusBadRequest, "invalid_json", "the body is not the expected JSON: "+err.Error())
		return false
	}
	return true
}

// Written is the body of a write's answer, and embedded in richer ones.
type Written struct {
	Position  uint64 `json:"position"`
	Unchanged bool   `json:"unchanged,omitempty"`
	Replayed  bool   `json:"replayed,omitempty"`
}

func written(res app.Result) Written {
	return Written{Position: res.Position, Unchanged: res.Unchanged, Replayed: res.Replayed}
}

// wrote answers a write: its log position in X-Stele-Position and body
// (which should embed Written).
func wrote(w http.ResponseWriter, status int, res app.Result, body any) {
	w.Header().Set("X-Stele-Position", strconv.FormatUint(res.Position, 10))
	if body == nil {
		body = written(res)
	}
	writeJSON(w, status, body)
}

// awaitPosition serves read-your-writes: when the request names a
// min_position, it waits (at most ReadWait) until the read models named
// (all when none) have applied it. Whether or not it names one, a read
// that depends on a halted read model is refused (503
// projection_halted): the read fails closed rather than serve tables
// that stopped following the log. On failure it answers and returns
// false.
func (s *Server) awaitPosition(w http.ResponseWriter, r *http.Request, names ...string) bool {
	v := r.URL.Query().Get("min_position")
	if v == "" {
		v = r.Header.Get("X-Stele-Min-Position")
	}
	if v == "" {
		if s.cfg.Reader != nil {
			if err := s.cfg.Reader.CheckHalted(r.Context(), names...); err != nil {
				s.fail(w, r, err)
				return false
			}
		}
		return true
	}
	pos, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		writeProblemDoc(w, r, Problem{Status: http.StatusBadRequest, Code: "invalid_request", Field: "min_position", Detail: "min_position: want a log position"})
		return false
	}
	if s.cfg.Pool == nil {
		s.fail(w, r, errNoReadModels)
		return false
	}
	if err := projections.WaitFor(r.Context(), s.cfg.Pool, pos, s.cfg.ReadWait, names...); err != nil {
		s.fail(w, r, err)
		return false
	}
	return true
}

// queryInt reads an optional integer query parameter within [lo, hi];
// on a bad value it answers and returns false.
func queryInt(w http.ResponseWriter, r *http.Request, name string, def, lo, hi int) (int, bool) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, true
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		writeProblemDoc(w, r, Problem{Status: http.StatusBadRequest, Code: "invalid_request", Field: name,
			Detail: fmt.Sprintf("%s: want an integer from %d to %d", name, lo, hi)})
		return 0, false
	}
	return n, true
}

// randomToken returns 32 random bytes in unpadded base64url.
func randomToken() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}
