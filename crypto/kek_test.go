package crypto_test

import (
	"context"
	"encoding/base64"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"stele.dev/stele/crypto"
)

func TestCreateLocalMasterKey(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "new", "sub", "master.key")
	uri, err := crypto.CreateLocalMasterKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if uri != "local://"+path {
		t.Fatalf("URI = %q", uri)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %04o, want 0600", fi.Mode().Perm())
	}
	for _, d := range []string{filepath.Join(dir, "new"), filepath.Join(dir, "new", "sub")} {
		if fi, err := os.Stat(d); err != nil || fi.Mode().Perm() != 0o700 {
			t.Fatalf("directory %s: %v, %v; want mode 0700", d, fi.Mode(), err)
		}
	}
	before, _ := os.ReadFile(path)
	if _, err := crypto.CreateLocalMasterKey(path); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second CreateLocalMasterKey = %v, want fs.ErrExist", err)
	}
	if after, _ := os.ReadFile(path); string(after) != string(before) {
		t.Fatal("the existing key was overwritten")
	}
	kek, err := crypto.OpenKEK(t.Context(), uri)
	if err != nil {
		t.Fatal(err)
	}
	if kek.URI() != uri {
		t.Fatalf("KEK URI = %q, want %q", kek.URI(), uri)
	}
	c, err := kek.Encrypt([]byte("p"), []byte("ad"))
	if err != nil {
		t.Fatal(err)
	}
	if p, err := kek.Decrypt(c, []byte("ad")); err != nil || string(p) != "p" {
		t.Fatalf("KEK round trip: %q, %v", p, err)
	}
}

func TestCreateLocalMasterKeyRelative(t *testing.T) {
	t.Chdir(t.TempDir())
	uri, err := crypto.CreateLocalMasterKey("keys/master.key")
	if err != nil {
		t.Fatal(err)
	}
	wd, _ := os.Getwd()
	if uri != "local://"+filepath.Join(wd, "keys", "master.key") {
		t.Fatalf("URI = %q, want an absolute path", uri)
	}
	if _, err := crypto.OpenKEK(t.Context(), uri); err != nil {
		t.Fatal(err)
	}
}

func TestLocalKEKFileMode(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "master.key")
	uri, err := crypto.CreateLocalMasterKey(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		mode fs.FileMode
		want error
	}{
		{0o600, nil},
		{0o400, nil},
		{0o700, nil},
		{0o640, crypto.ErrInsecureKeyFile},
		{0o644, crypto.ErrInsecureKeyFile},
		{0o604, crypto.ErrInsecureKeyFile},
		{0o660, crypto.ErrInsecureKeyFile},
		{0o602, crypto.ErrInsecureKeyFile},
		{0o610, crypto.ErrInsecureKeyFile},
		{0o666, crypto.ErrInsecureKeyFile},
	} {
		t.Run(tc.mode.String(), func(t *testing.T) {
			if err := os.Chmod(path, tc.mode); err != nil {
				t.Fatal(err)
			}
			_, err := crypto.OpenKEK(t.Context(), uri)
			if tc.want == nil && err != nil {
				t.Fatalf("OpenKEK with mode %04o: %v", tc.mode, err)
			}
			if tc.want != nil {
				if !errors.Is(err, tc.want) {
					t.Fatalf("OpenKEK with mode %04o = %v, want %v", tc.mode, err, tc.want)
				}
				if !strings.Contains(err.Error(), "chmod 600") {
					t.Errorf("error gives no remedy: %v", err)
				}
			}
		})
	}
}

func TestOpenKEKErrors(t *testing.T) {
	dir := t.TempDir()
	notKeyset := filepath.Join(dir, "not-a-keyset")
	if err := os.WriteFile(notKeyset, []byte(`{"secret": "do not print me"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("STELE_TEST_KEK_GARBAGE", "not base64!")
	t.Setenv("STELE_TEST_KEK_NOT_KEYSET", base64.StdEncoding.EncodeToString([]byte(`{"secret": "do not print me"}`)))
	for _, tc := range []struct {
		uri  string
		want error
	}{
		{"", crypto.ErrKEKURI},
		{"/var/lib/stele/master.key", crypto.ErrKEKURI},
		{"file:///var/lib/stele/master.key", crypto.ErrKEKURI},
		{"vault://transit/keys/stele", crypto.ErrKEKURI},
		{"hcvault://transit/keys/stele", crypto.ErrKEKURI},
		{"LOCAL:///x", crypto.ErrKEKURI},
		{"local://relative/master.key", crypto.ErrKEKURI},
		{"local://", crypto.ErrKEKURI},
		{"local://" + filepath.Join(dir, "missing.key"), crypto.ErrKEKUnavailable},
		{"local://" + dir, crypto.ErrKEKUnavailable},
		{"local://" + notKeyset, crypto.ErrKEKUnavailable},
		{"env://", crypto.ErrKEKURI},
		{"env://BAD-NAME", crypto.ErrKEKURI},
		{"env://STELE_TEST_KEK_UNSET_VARIABLE", crypto.ErrKEKUnavailable},
		{"env://STELE_TEST_KEK_GARBAGE", crypto.ErrKEKUnavailable},
		{"env://STELE_TEST_KEK_NOT_KEYSET", crypto.ErrKEKUnavailable},
		{"aws-kms://alias/stele", crypto.ErrKEKURI},
		{"gcp-kms://stele-key", crypto.ErrKEKURI},
	} {
		t.Run(tc.uri, func(t *testing.T) {
			_, err := crypto.OpenKEK(t.Context(), tc.uri)
			if !errors.Is(err, tc.want) {
				t.Fatalf("OpenKEK(%q) = %v, want %v", tc.uri, err, tc.want)
			}
			if strings.Contains(err.Error(), "do not print me") {
				t.Fatalf("error quotes the key file: %v", err)
			}
		})
	}
}

func TestEnvKEK(t *testing.T) {
	key, err := crypto.GenerateMasterKey()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("STELE_TEST_MASTER_KEY", base64.StdEncoding.EncodeToString(key)+"\n")
	kek, err := crypto.OpenKEK(t.Context(), "env://STELE_TEST_MASTER_KEY")
	if err != nil {
		t.Fatal(err)
	}
	if kek.URI() != "env://STELE_TEST_MASTER_KEY" {
		t.Fatalf("URI = %q", kek.URI())
	}
	// The same key in a file opens to an equivalent KEK.
	path := filepath.Join(t.TempDir(), "k")
	if err := os.WriteFile(path, key, 0o600); err != nil {
		t.Fatal(err)
	}
	fileKEK, err := crypto.OpenKEK(t.Context(), "local://"+path)
	if err != nil {
		t.Fatal(err)
	}
	ks := newKeyset(t)
	w, err := ks.Wrap(kek, []byte("ad"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := crypto.UnwrapKeyset(w, fileKEK, []byte("ad")); err != nil {
		t.Fatalf("file KEK cannot unwrap what the env KEK wrapped: %v", err)
	}
}

// TestCloudKEKWithoutCredentials opens AWS and GCP KMS URIs on a machine
// with no cloud credentials: the scheme must be recognised and a clear
// error come back quickly. The environment is set so that neither SDK can
// reach the network: no instance metadata lookups, the AWS endpoint on a
// closed loopback port, GCP credentials pointing at a missing file.
func TestCloudKEKWithoutCredentials(t *testing.T) {
	dir := t.TempDir()
	for k, v := range map[string]string{
		"AWS_EC2_METADATA_DISABLED":              "true",
		"AWS_ACCESS_KEY_ID":                      "",
		"AWS_SECRET_ACCESS_KEY":                  "",
		"AWS_SESSION_TOKEN":                      "",
		"AWS_PROFILE":                            "",
		"AWS_WEB_IDENTITY_TOKEN_FILE":            "",
		"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "",
		"AWS_CONTAINER_CREDENTIALS_FULL_URI":     "",
		"AWS_SHARED_CREDENTIALS_FILE":            filepath.Join(dir, "aws-credentials"),
		"AWS_CONFIG_FILE":                        filepath.Join(dir, "aws-config"),
		"AWS_ENDPOINT_URL_KMS":                   "http://127.0.0.1:1",
		"GOOGLE_APPLICATION_CREDENTIALS":         filepath.Join(dir, "missing-adc.json"),
		"GCE_METADATA_HOST":                      "127.0.0.1:1",
		"CLOUDSDK_CONFIG":                        dir,
	} {
		t.Setenv(k, v)
	}
	for _, tc := range []struct {
		uri, hint string
	}{
		{"aws-kms://arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab", "AWS credentials"},
		{"gcp-kms://projects/p/locations/global/keyRings/r/cryptoKeys/k", "Application Default Credentials"},
	} {
		t.Run(tc.uri[:7], func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			start := time.Now()
			kek, err := crypto.OpenKEK(ctx, tc.uri)
			if !errors.Is(err, crypto.ErrKEKUnavailable) {
				t.Fatalf("OpenKEK = %v, %v; want ErrKEKUnavailable", kek, err)
			}
			if !strings.Contains(err.Error(), tc.hint) || !strings.Contains(err.Error(), tc.uri) {
				t.Errorf("error does not name the key and the remedy: %v", err)
			}
			t.Logf("after %v: %v", time.Since(start).Round(time.Millisecond), err)
		})
	}
}
