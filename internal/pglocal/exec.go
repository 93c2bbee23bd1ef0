package pglocal

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// binaries are the PostgreSQL server programs of one installation.
type binaries struct {
	initdb, pgCtl string
	major         int
}

var errNotFound = errors.New("pglocal: postgresql binaries (initdb, pg_ctl) not found; install Debian's postgresql package or set DATABASE_URL")

// debianBinGlob is where Debian installs each PostgreSQL major version.
var debianBinGlob = "/usr/lib/postgresql/*/bin"

// findBinaries looks for initdb, pg_ctl and postgres on PATH, then in the
// Debian directories, highest version first. If want > 0 (an existing
// cluster's version), only that major version qualifies; otherwise the PATH
// installation wins if it is at least MinMajor, else the highest version.
func findBinaries(ctx context.Context, want int) (binaries, error) {
	var cands []binaries
	if b, ok := lookPathBinaries(); ok {
		cands = append(cands, b)
	}
	dirs, _ := filepath.Glob(debianBinGlob)
	var debian []binaries
	for _, d := range dirs {
		b := binaries{initdb: filepath.Join(d, "initdb"), pgCtl: filepath.Join(d, "pg_ctl")}
		if isExecutable(b.initdb) && isExecutable(b.pgCtl) && isExecutable(filepath.Join(d, "postgres")) {
			debian = append(debian, b)
		}
	}
	if len(cands) == 0 && len(debian) == 0 {
		return binaries{}, errNotFound
	}
	for i := range cands {
		cands[i].major = pgCtlMajor(ctx, cands[i].pgCtl)
	}
	for i := range debian {
		debian[i].major = pgCtlMajor(ctx, debian[i].pgCtl)
	}
	sort.SliceStable(debian, func(i, j int) bool { return debian[i].major > debian[j].major })
	cands = append(cands, debian...)

	if want > 0 {
		var seen []string
		for _, c := range cands {
			if c.major == want {
				return c, nil
			}
			seen = append(seen, fmt.Sprintf("%d (%s)", c.major, filepath.Dir(c.pgCtl)))
		}
		return binaries{}, fmt.Errorf("pglocal: the cluster needs PostgreSQL %d binaries, found only %s; install them or remove the cluster directory to recreate it", want, strings.Join(seen, ", "))
	}
	best := cands[0]
	for _, c := range cands {
		if c.major >= MinMajor {
			return c, nil
		}
		if c.major > best.major {
			best = c
		}
	}
	if best.major == 0 {
		return binaries{}, fmt.Errorf("pglocal: cannot determine the version of %s", best.pgCtl)
	}
	return binaries{}, fmt.Errorf("pglocal: PostgreSQL %d found (%s), need %d or newer; install a newer postgresql or set DATABASE_URL", best.major, filepath.Dir(best.pgCtl), MinMajor)
}

func lookPathBinaries() (binaries, bool) {
	initdb, err1 := exec.LookPath("initdb")
	pgCtl, err2 := exec.LookPath("pg_ctl")
	_, err3 := exec.LookPath("postgres")
	if err1 != nil || err2 != nil || err3 != nil {
		return binaries{}, false
	}
	return binaries{initdb: initdb, pgCtl: pgCtl}, true
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

var versionRE = regexp.MustCompile(`\(PostgreSQL\)\s+(\d+)`)

// pgCtlMajor runs "pg_ctl --version" and returns the major version, or 0.
func pgCtlMajor(ctx context.Context, pgCtl string) int {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, pgCtl, "--version").Output()
	if err != nil {
		return 0
	}
	m := versionRE.FindSubmatch(out)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

// install installs Debian's postgresql package with apt-get (root only).
func install(ctx context.Context, opts Options) error {
	if _, err := exec.LookPath("apt-get"); err != nil {
		return errors.New("pglocal: postgresql binaries (initdb, pg_ctl) not found and apt-get is unavailable; install PostgreSQL or set DATABASE_URL")
	}
	self := osUser{self: true}
	opts.logf("PostgreSQL not found; running apt-get update")
	if _, err := self.run(ctx, "/", "apt-get", "-o", "DPkg::Lock::Timeout=300", "update"); err != nil {
		return err
	}
	opts.logf("running apt-get install -y --no-install-recommends postgresql")
	if _, err := self.run(ctx, "/", "apt-get", "-o", "DPkg::Lock::Timeout=300", "install", "-y", "--no-install-recommends", "postgresql"); err != nil {
		return err
	}
	return nil
}

// osUser is the OS account that runs initdb, pg_ctl and the server.
type osUser struct {
	name     string
	uid, gid uint32
	groups   []uint32
	home     string
	self     bool // the calling process's own user: no credential switch
}

const fallbackUser = "stelepg"

// clusterUser decides which OS user runs the cluster: the caller unless it
// is root; as root the owner of an existing cluster, else "postgres", else
// "stelepg" (created with useradd when missing).
func (l layout) clusterUser(opts Options) (osUser, error) {
	euid := uint32(os.Geteuid())
	var owner uint32
	exists := false
	if fi, err := os.Stat(l.data); err == nil {
		exists = true
		owner = fi.Sys().(*syscall.Stat_t).Uid
	} else if !errors.Is(err, os.ErrNotExist) {
		return osUser{}, fmt.Errorf("pglocal: %v", err)
	}
	major, err := l.dataMajor()
	if euid != 0 && exists && owner != euid {
		return osUser{}, fmt.Errorf("pglocal: cluster %s belongs to uid %d (%s), not to the current user; run as that user or remove the directory", l.data, owner, userName(owner))
	}
	if err != nil {
		return osUser{}, err
	}
	initialized := major != 0
	if euid != 0 {
		if initialized && owner != euid {
			return osUser{}, fmt.Errorf("pglocal: cluster %s belongs to uid %d (%s), not to the current user; run as that user or remove the directory", l.data, owner, userName(owner))
		}
		return osUser{name: userName(euid), uid: euid, gid: uint32(os.Getegid()), self: true}, nil
	}
	if initialized {
		if owner == 0 {
			return osUser{}, fmt.Errorf("pglocal: cluster %s is owned by root, which cannot run PostgreSQL; remove the directory to recreate it", l.data)
		}
		u, err := user.LookupId(strconv.Itoa(int(owner)))
		if err != nil {
			return osUser{}, fmt.Errorf("pglocal: cluster %s belongs to uid %d, which has no account: %v", l.data, owner, err)
		}
		return toOSUser(u)
	}
	for _, name := range []string{"postgres", fallbackUser} {
		if u, err := user.Lookup(name); err == nil {
			return toOSUser(u)
		}
	}
	opts.logf("creating system user %s to run PostgreSQL", fallbackUser)
	out, err := exec.Command("useradd", "--system", "--user-group", "--no-create-home",
		"--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", fallbackUser).CombinedOutput()
	if u, err2 := user.Lookup(fallbackUser); err2 == nil { // also covers a concurrent useradd
		return toOSUser(u)
	}
	return osUser{}, cmdError("useradd "+fallbackUser, out, err)
}

func userName(uid uint32) string {
	if u, err := user.LookupId(strconv.Itoa(int(uid))); err == nil {
		return u.Username
	}
	return strconv.Itoa(int(uid))
}

func toOSUser(u *user.User) (osUser, error) {
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return osUser{}, fmt.Errorf("pglocal: user %s has a non-numeric uid or gid", u.Username)
	}
	ou := osUser{name: u.Username, uid: uint32(uid), gid: uint32(gid), home: u.HomeDir}
	if ids, err := u.GroupIds(); err == nil {
		for _, s := range ids {
			if g, err := strconv.ParseUint(s, 10, 32); err == nil {
				ou.groups = append(ou.groups, uint32(g))
			}
		}
	}
	return ou, nil
}

// command prepares a command that runs as u in dir. The environment drops
// PG* variables (PGDATA, PGPORT... would override our settings) and locale
// variables (the cluster uses the C locale), and sets HOME, USER and LOGNAME
// when switching users. Switching uses setuid/setgid in the child process
// directly (no runuser, su or shell quoting involved).
func (u osUser) command(ctx context.Context, dir, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(k, "PG"), strings.HasPrefix(k, "LC_"), k == "LANG", k == "LANGUAGE":
			continue
		case !u.self && (k == "HOME" || k == "USER" || k == "LOGNAME"):
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "LC_ALL=C", "DEBIAN_FRONTEND=noninteractive")
	if !u.self {
		env = append(env, "HOME="+u.home, "USER="+u.name, "LOGNAME="+u.name)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{
			Uid:    u.uid,
			Gid:    u.gid,
			Groups: u.groups,
		}}
	}
	cmd.Env = env
	// The server started by pg_ctl writes to its log file, not to our pipes;
	// WaitDelay is a safety net should any descendant keep them open.
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// run runs a command as u and returns its combined output, or an error
// holding the last line of that output.
func (u osUser) run(ctx context.Context, dir, name string, args ...string) ([]byte, error) {
	cmd := u.command(ctx, dir, name, args...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := cmd.Run()
	if errors.Is(err, exec.ErrWaitDelay) {
		err = nil
	}
	if err != nil {
		return out.Bytes(), cmdError(filepath.Base(name)+" "+firstArg(args), out.Bytes(), err)
	}
	return out.Bytes(), nil
}

func firstArg(args []string) string {
	// Name the pg_ctl mode or apt-get action; for initdb the data directory.
	for i := len(args) - 1; i >= 0; i-- {
		switch a := args[i]; a {
		case "start", "stop", "status", "update", "install":
			return a
		}
	}
	return ""
}

// cmdError makes a one-line error from a failed command and its output.
func cmdError(what string, out []byte, err error) error {
	what = strings.TrimSpace(what)
	line := lastLine(out)
	if line == "" {
		return fmt.Errorf("pglocal: %s: %v", what, err)
	}
	return fmt.Errorf("pglocal: %s failed (%v): %s", what, err, line)
}

func lastLine(out []byte) string {
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if s := strings.TrimSpace(lines[i]); s != "" {
			return s
		}
	}
	return ""
}
