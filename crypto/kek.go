package crypto

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/tink-crypto/tink-go-awskms/v3/integration/awskms"
	"github.com/tink-crypto/tink-go-gcpkms/v2/integration/gcpkms"
	"github.com/tink-crypto/tink-go/v2/aead"
	"github.com/tink-crypto/tink-go/v2/insecurecleartextkeyset"
	"github.com/tink-crypto/tink-go/v2/keyset"
	"github.com/tink-crypto/tink-go/v2/tink"
)

// KEK is a key-encryption key: it wraps and unwraps environment keysets
// (Keyset.Wrap, UnwrapKeyset). Encrypt and Decrypt are Tink's AEAD
// contract; implementations are safe for concurrent use.
type KEK interface {
	// URI says where the key lives, in the form OpenKEK accepts, for
	// example "local:///var/lib/stele/master.key" or
	// "aws-kms://arn:aws:kms:eu-west-1:111122223333:key/…". It names the
	// key and holds no secret.
	URI() string
	tink.AEAD
}

// URI schemes of KEKs.
const (
	localScheme = "local://"
	envScheme   = "env://"
	awsScheme   = "aws-kms://"
	gcpScheme   = "gcp-kms://"
)

// kmsCallTimeout bounds each call a cloud KEK makes to its KMS: the AEAD
// interface carries no context.
const kmsCallTimeout = 30 * time.Second

// maxKeyFileSize bounds what OpenKEK reads from a key file or variable; a
// master keyset is a few hundred bytes.
const maxKeyFileSize = 1 << 20

var envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// OpenKEK opens the KEK that uri names:
//
//   - local://<absolute path>: a Tink AES-256-GCM keyset in cleartext JSON
//     in a file (CreateLocalMasterKey writes one). The file must be a
//     regular file that group and others can neither read nor write (mode
//     0600 or 0400), else OpenKEK returns ErrInsecureKeyFile. The path is
//     taken literally, not percent-decoded.
//   - env://<NAME>: the same keyset JSON, base64-encoded (standard
//     alphabet, padded), in environment variable NAME.
//   - aws-kms://arn:<partition>:kms:<region>:<account>:key/<id> (or
//     …:alias/<name>): a symmetric AWS KMS key, through Tink's AWS KMS
//     client with the default credential chain (environment, shared
//     files, SSO, web identity, container and instance roles).
//   - gcp-kms://projects/<p>/locations/<l>/keyRings/<r>/cryptoKeys/<k>: a
//     Google Cloud KMS key, through Tink's GCP KMS client (gRPC) with
//     Application Default Credentials.
//
// A local or env keyset may hold several AES-256-GCM keys (a master key
// rotated in place): its primary wraps, every enabled key unwraps.
//
// For a cloud KMS, OpenKEK encrypts and decrypts a probe within ctx, so
// missing credentials, a missing permission (both kms:Encrypt and
// kms:Decrypt, or roles/cloudkms.cryptoKeyEncrypterDecrypter, are needed)
// or an unreachable KMS fail here rather than on the first write. Later
// calls to the KMS are each bounded by 30 seconds.
//
// Errors match ErrKEKURI for an unknown scheme or a malformed URI,
// ErrInsecureKeyFile for a key file with too open a mode, and
// ErrKEKUnavailable when the key cannot be loaded or the KMS refuses it.
func OpenKEK(ctx context.Context, uri string) (KEK, error) {
	return openKEK(ctx, uri, kmsOptions{})
}

// kmsOptions lets tests point the cloud clients at fakes.
type kmsOptions struct {
	aws []awskms.ClientOption
	gcp []gcpkms.Option
}

func openKEK(ctx context.Context, uri string, o kmsOptions) (KEK, error) {
	switch {
	case strings.HasPrefix(uri, localScheme):
		return openLocalKEK(uri)
	case strings.HasPrefix(uri, envScheme):
		return openEnvKEK(uri)
	case strings.HasPrefix(uri, awsScheme):
		if !strings.HasPrefix(uri, awsScheme+"arn:") {
			return nil, fmt.Errorf("%w: %q: an AWS KMS URI is aws-kms://arn:<partition>:kms:<region>:<account>:key/<id>", ErrKEKURI, uri)
		}
		a, err := awskms.NewAEADWithContext(ctx, strings.TrimPrefix(uri, awsScheme), o.aws...)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrKEKUnavailable, uri, err)
		}
		return probe(ctx, &cloudKEK{uri: uri, aead: a}, "check AWS credentials (AWS_PROFILE, AWS_ACCESS_KEY_ID, an instance role) and that they may kms:Encrypt and kms:Decrypt with this key")
	case strings.HasPrefix(uri, gcpScheme):
		if !strings.HasPrefix(uri, gcpScheme+"projects/") {
			return nil, fmt.Errorf("%w: %q: a GCP KMS URI is gcp-kms://projects/<p>/locations/<l>/keyRings/<r>/cryptoKeys/<k>", ErrKEKURI, uri)
		}
		a, err := gcpkms.GetAEADWithContext(ctx, uri, o.gcp...)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %w (check Application Default Credentials: GOOGLE_APPLICATION_CREDENTIALS or gcloud auth application-default login)", ErrKEKUnavailable, uri, err)
		}
		return probe(ctx, &cloudKEK{uri: uri, aead: a}, "check Application Default Credentials and that they hold roles/cloudkms.cryptoKeyEncrypterDecrypter on this key")
	}
	scheme, _, ok := strings.Cut(uri, "://")
	if !ok {
		return nil, fmt.Errorf("%w: %q has no scheme; use local://, env://, aws-kms:// or gcp-kms://", ErrKEKURI, uri)
	}
	return nil, fmt.Errorf("%w: unknown scheme %q; use local://, env://, aws-kms:// or gcp-kms://", ErrKEKURI, scheme)
}

// probeAD is the associated data of OpenKEK's probe; nothing else uses it.
var probeAD = []byte("stele/kek-probe/v1")

// probe round-trips a few bytes through k within ctx.
func probe(ctx context.Context, k *cloudKEK, hint string) (KEK, error) {
	want := []byte("stele KEK probe")
	c, err := k.aead.EncryptWithContext(ctx, want, probeAD)
	if err == nil {
		var got []byte
		got, err = k.aead.DecryptWithContext(ctx, c, probeAD)
		if err == nil && !bytes.Equal(got, want) {
			err = errors.New("the KMS returned another plaintext")
		}
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w (%s)", ErrKEKUnavailable, k.uri, err, hint)
	}
	return k, nil
}

// cloudKEK is a KEK in a cloud KMS.
type cloudKEK struct {
	uri  string
	aead tink.AEADWithContext
}

var _ KEK = (*cloudKEK)(nil)

func (k *cloudKEK) URI() string { return k.uri }

func (k *cloudKEK) Encrypt(plaintext, associatedData []byte) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), kmsCallTimeout)
	defer cancel()
	return k.aead.EncryptWithContext(ctx, plaintext, associatedData)
}

func (k *cloudKEK) Decrypt(ciphertext, associatedData []byte) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), kmsCallTimeout)
	defer cancel()
	return k.aead.DecryptWithContext(ctx, ciphertext, associatedData)
}

// localKEK is a master keyset held in memory, read from a file or an
// environment variable.
type localKEK struct {
	uri string
	tink.AEAD
}

var _ KEK = (*localKEK)(nil)

func (k *localKEK) URI() string { return k.uri }

func openLocalKEK(uri string) (KEK, error) {
	path := strings.TrimPrefix(uri, localScheme)
	if !filepath.IsAbs(path) {
		return nil, fmt.Errorf("%w: %q: the path of a local KEK must be absolute (local:///path/to/master.key)", ErrKEKURI, uri)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKEKUnavailable, err)
	}
	defer f.Close()
	// Check the mode of the file opened, not of whatever the path names
	// by the time of a second look.
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKEKUnavailable, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: %s is not a regular file", ErrKEKUnavailable, path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s has mode %04o; group and others must have no access (chmod 600 %s)", ErrInsecureKeyFile, path, perm, path)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKEKUnavailable, err)
	}
	a, err := parseMasterKey(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrKEKUnavailable, path, err)
	}
	return &localKEK{uri: localScheme + filepath.Clean(path), AEAD: a}, nil
}

func openEnvKEK(uri string) (KEK, error) {
	name := strings.TrimPrefix(uri, envScheme)
	if !envNameRE.MatchString(name) {
		return nil, fmt.Errorf("%w: %q: env:// takes an environment variable name", ErrKEKURI, uri)
	}
	v, ok := os.LookupEnv(name)
	if !ok || v == "" {
		return nil, fmt.Errorf("%w: environment variable %s is not set", ErrKEKUnavailable, name)
	}
	data, err := base64.StdEncoding.DecodeString(strings.TrimSpace(v))
	if err != nil {
		return nil, fmt.Errorf("%w: environment variable %s is not base64 (it holds the master keyset JSON, base64-encoded)", ErrKEKUnavailable, name)
	}
	a, err := parseMasterKey(data)
	if err != nil {
		return nil, fmt.Errorf("%w: environment variable %s: %w", ErrKEKUnavailable, name, err)
	}
	return &localKEK{uri: uri, AEAD: a}, nil
}

// parseMasterKey reads a cleartext JSON keyset of AES-256-GCM keys and
// returns its AEAD. Errors never quote the input.
func parseMasterKey(data []byte) (tink.AEAD, error) {
	if len(data) > maxKeyFileSize {
		return nil, errors.New("larger than a master keyset can be")
	}
	h, err := insecurecleartextkeyset.Read(keyset.NewJSONReader(bytes.NewReader(data)))
	if err != nil {
		return nil, errors.New("not a Tink JSON keyset")
	}
	for i := range h.Len() {
		e, err := h.Entry(i)
		if err != nil {
			return nil, err
		}
		if err := checkAES256GCM(e); err != nil {
			return nil, err
		}
	}
	a, err := aead.New(h)
	if err != nil {
		return nil, fmt.Errorf("not a usable AEAD keyset: %v", err)
	}
	return a, nil
}

// GenerateMasterKey returns a new master keyset, one AES-256-GCM key, as
// Tink cleartext JSON: the content of a local:// key file, and, base64
// encoded, of an env:// variable. It is secret.
func GenerateMasterKey() ([]byte, error) {
	h, err := keyset.NewHandle(keyTemplate())
	if err != nil {
		return nil, fmt.Errorf("crypto: generate master key: %v", err)
	}
	var buf bytes.Buffer
	if err := insecurecleartextkeyset.Write(h, keyset.NewJSONWriter(&buf)); err != nil {
		return nil, fmt.Errorf("crypto: generate master key: %v", err)
	}
	return buf.Bytes(), nil
}

// CreateLocalMasterKey writes a new master keyset (GenerateMasterKey) to a
// new file at path with mode 0600, creating missing parent directories
// with mode 0700, and returns its local:// URI. A relative path is made
// absolute. It never overwrites: if path exists it returns an error
// matching fs.ErrExist.
func CreateLocalMasterKey(path string) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", fmt.Errorf("crypto: create master key: %w", err)
	}
	data, err := GenerateMasterKey()
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(abs), 0o700); err != nil {
		return "", fmt.Errorf("crypto: create master key: %w", err)
	}
	f, err := os.OpenFile(abs, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", fmt.Errorf("crypto: create master key: %w", err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(abs)
		return "", fmt.Errorf("crypto: create master key: %w", err)
	}
	if err := syncDir(filepath.Dir(abs)); err != nil {
		return "", fmt.Errorf("crypto: create master key: %w", err)
	}
	return localScheme + abs, nil
}

// syncDir makes a new directory entry durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, fs.ErrInvalid) {
		return err
	}
	return nil
}
