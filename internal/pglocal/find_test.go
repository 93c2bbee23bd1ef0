package pglocal

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeInstall creates dir with initdb, pg_ctl and postgres scripts that
// report the given major version.
func fakeInstall(t *testing.T, dir string, major int) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"initdb", "pg_ctl", "postgres"} {
		script := fmt.Sprintf("#!/bin/sh\necho '%s (PostgreSQL) %d.3 (Debian %d.3-1)'\n", name, major, major)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

func withFakeSystem(t *testing.T, pathDir string, debian ...int) string {
	t.Helper()
	root := t.TempDir()
	old := debianBinGlob
	debianBinGlob = filepath.Join(root, "lib", "*", "bin")
	t.Cleanup(func() { debianBinGlob = old })
	for _, v := range debian {
		fakeInstall(t, filepath.Join(root, "lib", fmt.Sprint(v), "bin"), v)
	}
	empty := filepath.Join(root, "empty")
	if err := os.Mkdir(empty, 0o755); err != nil {
		t.Fatal(err)
	}
	path := empty
	if pathDir != "" {
		path = filepath.Join(root, pathDir)
	}
	t.Setenv("PATH", path)
	return root
}

func TestFindBinariesNone(t *testing.T) {
	withFakeSystem(t, "")
	_, err := findBinaries(context.Background(), 0)
	if !errors.Is(err, errNotFound) {
		t.Fatalf("err = %v, want errNotFound", err)
	}
	if !strings.Contains(err.Error(), "install Debian's postgresql package or set DATABASE_URL") {
		t.Errorf("unclear: %v", err)
	}
}

func TestFindBinariesTooOld(t *testing.T) {
	withFakeSystem(t, "", 13, 14)
	_, err := findBinaries(context.Background(), 0)
	if err == nil || !strings.Contains(err.Error(), "PostgreSQL 14 found") || !strings.Contains(err.Error(), "need 15 or newer") {
		t.Fatalf("err = %v", err)
	}
}

func TestFindBinariesPreference(t *testing.T) {
	root := withFakeSystem(t, "path", 15, 17, 16)
	ctx := context.Background()

	b, err := findBinaries(ctx, 0)
	if err != nil || b.major != 17 {
		t.Fatalf("no PATH install: got %+v, %v; want 17", b, err)
	}
	if b, err := findBinaries(ctx, 15); err != nil || b.major != 15 {
		t.Errorf("want=15: got %+v, %v", b, err)
	}
	if _, err := findBinaries(ctx, 12); err == nil || !strings.Contains(err.Error(), "needs PostgreSQL 12") {
		t.Errorf("want=12: %v", err)
	}

	fakeInstall(t, filepath.Join(root, "path"), 16)
	if b, err := findBinaries(ctx, 0); err != nil || b.major != 16 || filepath.Dir(b.pgCtl) != filepath.Join(root, "path") {
		t.Errorf("PATH install of 16 should win: got %+v, %v", b, err)
	}
	fakeInstall(t, filepath.Join(root, "path"), 13)
	if b, err := findBinaries(ctx, 0); err != nil || b.major != 17 {
		t.Errorf("PATH install of 13 is too old, want 17: got %+v, %v", b, err)
	}
}
