package checkpoint

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// LoadKeyFile reads a signing key written by CreateKeyFile. Like ssh, it
// refuses a key file that group or others may read.
func LoadKeyFile(path string) (*Signer, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: signing key: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("checkpoint: signing key %s is open to other users (mode %04o); run chmod 600 on it", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: signing key: %w", err)
	}
	s, err := NewSigner(strings.TrimSpace(string(b)))
	if err != nil {
		return nil, fmt.Errorf("%w (in %s)", err, path)
	}
	return s, nil
}

// CreateKeyFile generates a signing key for origin and writes it to path
// with mode 0600, creating parent directories with mode 0700. It fails if
// path exists: an existing key is never overwritten.
func CreateKeyFile(path, origin string) (*Signer, error) {
	skey, _, err := GenerateKey(origin)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("checkpoint: signing key: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("checkpoint: signing key %s already exists; refusing to overwrite it", path)
		}
		return nil, fmt.Errorf("checkpoint: signing key: %w", err)
	}
	if _, err := f.WriteString(skey + "\n"); err != nil {
		f.Close()
		os.Remove(path)
		return nil, fmt.Errorf("checkpoint: signing key: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return nil, fmt.Errorf("checkpoint: signing key: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("checkpoint: signing key: %w", err)
	}
	return NewSigner(skey)
}
