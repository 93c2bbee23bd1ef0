package cli

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"go.yaml.in/yaml/v3"
)

// DirFileName is the file `stele init` writes: the organization, project
// and environment (and optionally the server) that commands run in this
// folder and the folders below it use by default.
const DirFileName = ".stele.yaml"

// Defaults are what a folder's DirFileName names. None of them is a
// secret: the file is meant to be committed with the code.
type Defaults struct {
	Server  string `yaml:"server,omitempty"`
	Org     string `yaml:"org,omitempty"`
	Project string `yaml:"project,omitempty"`
	Env     string `yaml:"env,omitempty"`
}

// FindDefaults looks for DirFileName in dir and then in each parent
// folder, and reads the first one found. It returns the zero Defaults and
// an empty path when there is none; a file that cannot be read or parsed
// is an error naming it.
func FindDefaults(dir string) (Defaults, string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return Defaults{}, "", err
	}
	for {
		path := filepath.Join(dir, DirFileName)
		data, err := os.ReadFile(path)
		switch {
		case err == nil:
			d, err := ParseDefaults(data)
			if err != nil {
				return Defaults{}, path, fmt.Errorf("%s: %w", path, err)
			}
			return d, path, nil
		case !errors.Is(err, fs.ErrNotExist):
			return Defaults{}, path, err
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return Defaults{}, "", nil
		}
		dir = parent
	}
}

// ParseDefaults reads a DirFileName file. Unknown fields are errors, so
// that a misspelt one is not silently ignored.
func ParseDefaults(data []byte) (Defaults, error) {
	var d Defaults
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&d); err != nil && !errors.Is(err, io.EOF) { // an empty file names nothing
		return Defaults{}, fmt.Errorf("not a stele defaults file: %v", strings.TrimPrefix(err.Error(), "yaml: "))
	}
	return d, nil
}

// Format writes d as a DirFileName file.
func (d Defaults) Format() []byte {
	var b bytes.Buffer
	b.WriteString("# Stele defaults for this folder and the folders below it (written by stele init).\n")
	b.WriteString("# Flags and STELE_ADDR, STELE_ORG, STELE_PROJECT, STELE_ENV override them. No secret belongs here.\n")
	out, _ := yaml.Marshal(d)
	b.Write(out)
	return b.Bytes()
}
