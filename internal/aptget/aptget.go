// Package aptget finds a program on PATH, installing its Debian package
// first when the program is missing and the process runs as root with
// apt-get. Tests use it for the real programs they drive (a browser,
// shells), so that they run on a fresh Debian machine and say plainly why
// they skip elsewhere.
package aptget

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// lookups finds or installs each program once per process; mu keeps two
// installs from fighting over dpkg's lock.
var (
	lookups sync.Map // bin → func() (found, error)
	mu      sync.Mutex
)

type found struct {
	path      string
	installed bool
}

// Find returns the path of the program bin. When bin is not on PATH, it
// installs the Debian package pkg (apt-get install --no-install-recommends,
// refreshing the package lists and retrying once if that fails) when the
// process runs as root; installed says it did. Its error says why the
// program is not available. Each program is looked up (and installed) once
// per process.
func Find(bin, pkg string) (path string, installed bool, err error) {
	f, _ := lookups.LoadOrStore(bin, sync.OnceValues(func() (found, error) { return lookOrInstall(bin, pkg) }))
	r, err := f.(func() (found, error))()
	return r.path, r.installed, err
}

func lookOrInstall(bin, pkg string) (found, error) {
	if p, err := exec.LookPath(bin); err == nil {
		return found{path: p}, nil
	}
	if os.Geteuid() != 0 {
		return found{}, fmt.Errorf("%s is not installed, and only root may install it (apt-get install %s)", bin, pkg)
	}
	if _, err := exec.LookPath("apt-get"); err != nil {
		return found{}, fmt.Errorf("%s is not installed, and there is no apt-get to install it", bin)
	}
	mu.Lock()
	defer mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	apt := func(args ...string) error {
		// Wait for a lock that another apt-get holds rather than fail.
		cmd := exec.CommandContext(ctx, "apt-get", append([]string{"-o", "DPkg::Lock::Timeout=300"}, args...)...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("apt-get %s: %v: %s", args[0], err, lastLines(out, 3))
		}
		return nil
	}
	install := func() error { return apt("install", "-y", "--no-install-recommends", pkg) }
	if err := install(); err != nil { // the package lists may be stale
		if err := apt("update"); err != nil {
			return found{}, err
		}
		if err := install(); err != nil {
			return found{}, err
		}
	}
	p, err := exec.LookPath(bin)
	if err != nil {
		return found{}, fmt.Errorf("apt-get installed %s, but %s is still not on PATH", pkg, bin)
	}
	return found{path: p, installed: true}, nil
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], " | ")
}
