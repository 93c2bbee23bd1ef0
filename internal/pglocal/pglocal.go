// Package pglocal finds or starts a private PostgreSQL cluster for
// development and tests, so that a machine with Go but no running PostgreSQL
// server can still run the project.
//
// A cluster lives entirely in one directory:
//
//	dir/lock      flock(2) lock that serializes Ensure and Stop across processes
//	dir/data/     PGDATA, owned by the OS user that runs the server
//	dir/socket/   Unix-domain socket directory
//	dir/log       server log (pg_ctl -l)
//	dir/password  password of the "postgres" superuser role (mode 0600)
//	dir/port      TCP port, reused on later starts
//	dir/url       connection URL (mode 0600)
//
// The server listens on 127.0.0.1 only. TCP connections authenticate with the
// generated password (scram-sha-256); Unix-socket connections use peer
// authentication. fsync stays on, so timings measured against the cluster
// include real durability costs.
//
// initdb and pg_ctl refuse to run as root. When the calling process is root,
// the server runs as the owner of an existing cluster, else as the "postgres"
// OS user (present once Debian's postgresql package is installed), else as a
// system user "stelepg" that Ensure creates with useradd. That user must be
// able to traverse every parent directory of dir (Ensure checks and reports
// the first one it cannot); Ensure makes dir itself mode 0755 and hands
// data/, socket/ and log to that user, while password and url stay 0600 and
// owned by root.
package pglocal

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// MinMajor is the oldest PostgreSQL major version Ensure accepts.
const MinMajor = 15

// Options tunes Ensure. The zero value is valid.
type Options struct {
	// Logf, if not nil, receives one line per slow step (apt-get, useradd,
	// initdb, server start). Nothing is logged when the cluster already runs.
	Logf func(format string, args ...any)

	// Install allows Ensure, when it runs as root and finds no PostgreSQL
	// binaries, to run "apt-get update" and "apt-get install postgresql"
	// (Debian's package) before looking again. Ignored when not root.
	Install bool
}

func (o Options) logf(format string, args ...any) {
	if o.Logf != nil {
		o.Logf("pglocal: "+format, args...)
	}
}

// DefaultDir returns the conventional cluster directory of the project:
// <module root>/.stele/postgres, where the module root is the nearest
// directory at or above the working directory that holds a go.mod file.
func DefaultDir() (string, error) {
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	return filepath.Join(root, ".stele", "postgres"), nil
}

// ModuleRoot returns the nearest directory at or above the working directory
// that contains a go.mod file.
func ModuleRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("pglocal: %w", err)
	}
	for d := wd; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("pglocal: no go.mod found in %s or any parent directory", wd)
		}
	}
}

// Ensure returns a connection URL for the private PostgreSQL cluster kept
// under dir, creating dir and the cluster (initdb) and starting the server
// (pg_ctl) when needed. The URL has the form
//
//	postgres://postgres:PASSWORD@127.0.0.1:PORT/postgres?sslmode=disable
//
// and names the superuser of the cluster. When Ensure returns without error
// the server accepts connections with that URL. A cluster that already runs
// is reused (the fast path only reads dir/url and connects once); a stopped
// one is started with its data intact, on its previous port if that port is
// still free.
//
// Ensure is safe to call concurrently from several goroutines and processes:
// slow steps run under an exclusive flock on dir/lock, and waiting for it
// ends when ctx does. Commands are bounded (pg_ctl waits at most 60s for the
// server), but apt-get is not: give ctx a deadline. The server keeps
// running after the calling process exits; use Stop to stop it. Errors are
// single lines prefixed with "pglocal: ".
func Ensure(ctx context.Context, dir string, opts Options) (string, error) {
	l, err := newLayout(dir)
	if err != nil {
		return "", err
	}
	if u, ok := l.alreadyRunning(ctx); ok {
		return u, nil
	}
	if err := os.MkdirAll(l.dir, 0o755); err != nil {
		return "", fmt.Errorf("pglocal: %v", err)
	}
	unlock, err := lock(ctx, l.dir)
	if err != nil {
		return "", err
	}
	defer unlock()
	return l.ensureLocked(ctx, opts)
}

// Stop stops the server of the cluster under dir (pg_ctl stop -m fast) and
// waits until it has exited. It returns nil when dir or the cluster does not
// exist or the server does not run. The data is kept; a later Ensure starts
// the server again.
func Stop(ctx context.Context, dir string) error {
	l, err := newLayout(dir)
	if err != nil {
		return err
	}
	if major, err := l.dataMajor(); err != nil || major == 0 {
		return err
	}
	unlock, err := lock(ctx, l.dir)
	if err != nil {
		return err
	}
	defer unlock()
	if _, err := os.Stat(filepath.Join(l.data, "postmaster.pid")); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	major, err := l.dataMajor()
	if err != nil {
		return err
	}
	bins, err := findBinaries(ctx, major)
	if err != nil {
		return err
	}
	u, err := l.clusterUser(Options{})
	if err != nil {
		return err
	}
	running, err := l.running(ctx, bins, u)
	if err != nil || !running {
		return err
	}
	_, err = u.run(ctx, l.dir, bins.pgCtl, "-D", l.data, "-m", "fast", "-w", "-t", "60", "stop")
	if err != nil {
		if running, err2 := l.running(ctx, bins, u); err2 == nil && !running {
			return nil
		}
		return err
	}
	return nil
}

// layout holds the paths of one cluster directory.
type layout struct {
	dir, data, socket, log, password, port, url string
}

func newLayout(dir string) (layout, error) {
	if dir == "" {
		return layout{}, errors.New("pglocal: empty cluster directory")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return layout{}, fmt.Errorf("pglocal: %v", err)
	}
	return layout{
		dir:      abs,
		data:     filepath.Join(abs, "data"),
		socket:   filepath.Join(abs, "socket"),
		log:      filepath.Join(abs, "log"),
		password: filepath.Join(abs, "password"),
		port:     filepath.Join(abs, "port"),
		url:      filepath.Join(abs, "url"),
	}, nil
}

func (l layout) ensureLocked(ctx context.Context, opts Options) (string, error) {
	// Another process may have started the server while we waited for the lock.
	if u, ok := l.alreadyRunning(ctx); ok {
		return u, nil
	}

	major, err := l.dataMajor()
	if err != nil {
		return "", err
	}
	bins, err := findBinaries(ctx, major)
	if errors.Is(err, errNotFound) && opts.Install && os.Geteuid() == 0 {
		if err := install(ctx, opts); err != nil {
			return "", err
		}
		bins, err = findBinaries(ctx, major)
	}
	if err != nil {
		return "", err
	}

	usr, err := l.clusterUser(opts)
	if err != nil {
		return "", err
	}
	if err := l.prepareDir(usr); err != nil {
		return "", err
	}

	if major == 0 {
		if err := l.initdb(ctx, bins, usr, opts); err != nil {
			return "", err
		}
	}

	running, err := l.running(ctx, bins, usr)
	if err != nil {
		return "", err
	}
	var port int
	if running {
		port, err = l.pidFilePort()
		if err != nil {
			return "", err
		}
	} else {
		port, err = l.start(ctx, bins, usr, opts)
		if err != nil {
			return "", err
		}
	}

	pw, err := os.ReadFile(l.password)
	if err != nil {
		return "", fmt.Errorf("pglocal: cannot read the cluster password: %v (remove %s to recreate the cluster)", err, l.dir)
	}
	u := clusterURL(strings.TrimSpace(string(pw)), port)
	if err := l.waitReady(ctx, u); err != nil {
		return "", err
	}
	if err := writeFileAtomic(l.port, []byte(strconv.Itoa(port)+"\n"), 0o644); err != nil {
		return "", err
	}
	if err := writeFileAtomic(l.url, []byte(u+"\n"), 0o600); err != nil {
		return "", err
	}
	return u, nil
}

func clusterURL(password string, port int) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.UserPassword("postgres", password),
		Host:     net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		Path:     "/postgres",
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// alreadyRunning is the fast path: it returns the recorded URL if the server
// runs and answers on it. A missing postmaster.pid means a stopped server, so
// no connection is attempted (the recorded port may belong to someone else).
func (l layout) alreadyRunning(ctx context.Context) (string, bool) {
	if _, err := os.Stat(filepath.Join(l.data, "postmaster.pid")); err != nil {
		return "", false
	}
	u, err := l.readURL()
	if err != nil {
		return "", false
	}
	return u, l.check(ctx, u, 3*time.Second) == nil
}

func (l layout) readURL() (string, error) {
	b, err := os.ReadFile(l.url)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// dataMajor returns the major version recorded in data/PG_VERSION, or 0 when
// the cluster has not been initialized (no such file). An unreadable file is
// an error, not an uninitialized cluster.
func (l layout) dataMajor() (int, error) {
	path := filepath.Join(l.data, "PG_VERSION")
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		if fi, err2 := os.Stat(l.data); err2 == nil && errors.Is(err, os.ErrPermission) {
			owner := fi.Sys().(*syscall.Stat_t).Uid
			return 0, fmt.Errorf("pglocal: cluster %s belongs to uid %d (%s), not to the current user; run as that user or remove the directory", l.data, owner, userName(owner))
		}
		return 0, fmt.Errorf("pglocal: cannot read the cluster's version: %v", err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("pglocal: %s holds %q, not a PostgreSQL major version", path, strings.TrimSpace(string(b)))
	}
	return n, nil
}

// check connects once with u and verifies that the server is the one whose
// data directory is l.data (not some other server that took the port).
func (l layout) check(ctx context.Context, u string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, u)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	var dd string
	if err := conn.QueryRow(ctx, "SELECT current_setting('data_directory')").Scan(&dd); err != nil {
		return err
	}
	if !samePath(dd, l.data) {
		return fmt.Errorf("server at %s serves %s, not %s", u, dd, l.data)
	}
	return nil
}

func samePath(a, b string) bool {
	if a == b {
		return true
	}
	ra, err1 := filepath.EvalSymlinks(a)
	rb, err2 := filepath.EvalSymlinks(b)
	return err1 == nil && err2 == nil && ra == rb
}

// waitReady polls until the server accepts connections with u.
func (l layout) waitReady(ctx context.Context, u string) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for {
		err := l.check(ctx, u, 5*time.Second)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("pglocal: server in %s does not accept connections: %s", l.dir, oneLine(err.Error()))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// pidFilePort reads the port of the running server from postmaster.pid
// (line 4).
func (l layout) pidFilePort() (int, error) {
	b, err := os.ReadFile(filepath.Join(l.data, "postmaster.pid"))
	if err != nil {
		return 0, fmt.Errorf("pglocal: %v", err)
	}
	lines := strings.Split(string(b), "\n")
	if len(lines) >= 4 {
		if p, err := strconv.Atoi(strings.TrimSpace(lines[3])); err == nil && p > 0 {
			return p, nil
		}
	}
	return 0, fmt.Errorf("pglocal: no port in %s", filepath.Join(l.data, "postmaster.pid"))
}

// running reports whether the cluster's server runs (pg_ctl status).
func (l layout) running(ctx context.Context, bins binaries, u osUser) (bool, error) {
	cmd := u.command(ctx, l.dir, bins.pgCtl, "-D", l.data, "status")
	out, err := cmd.CombinedOutput()
	if err == nil {
		return true, nil
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() == 3 {
		return false, nil
	}
	return false, cmdError(bins.pgCtl+" status", out, err)
}

// prepareDir creates the directories and files the server writes to, owned
// by usr, and checks that usr can reach them.
func (l layout) prepareDir(usr osUser) error {
	if !usr.self {
		// The cluster user must traverse dir; password and url stay 0600.
		if err := os.Chmod(l.dir, 0o755); err != nil {
			return fmt.Errorf("pglocal: %v", err)
		}
		if err := checkTraversable(filepath.Dir(l.dir), usr); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(l.socket, 0o755); err != nil {
		return fmt.Errorf("pglocal: %v", err)
	}
	f, err := os.OpenFile(l.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("pglocal: %v", err)
	}
	f.Close()
	if !usr.self {
		for _, p := range []string{l.socket, l.log} {
			if err := os.Chown(p, int(usr.uid), int(usr.gid)); err != nil {
				return fmt.Errorf("pglocal: %v", err)
			}
		}
	}
	return nil
}

// checkTraversable verifies that usr may search dir and all its parents,
// judging by permission bits (ACLs are not consulted).
func checkTraversable(dir string, usr osUser) error {
	for d := dir; ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return fmt.Errorf("pglocal: %v", err)
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if ok {
			perm := fi.Mode().Perm()
			var can bool
			switch {
			case st.Uid == usr.uid:
				can = perm&0o100 != 0
			case st.Gid == usr.gid || slices.Contains(usr.groups, st.Gid):
				can = perm&0o010 != 0
			default:
				can = perm&0o001 != 0
			}
			if !can {
				return fmt.Errorf("pglocal: directory %s (mode %04o) is not traversable by OS user %q, which must run the PostgreSQL server; run chmod o+x %s or keep the cluster directory elsewhere", d, perm, usr.name, d)
			}
		}
		if filepath.Dir(d) == d {
			return nil
		}
	}
}

// initdb creates the cluster in l.data with a fresh random password.
func (l layout) initdb(ctx context.Context, bins binaries, usr osUser, opts Options) error {
	opts.logf("initializing PostgreSQL %d cluster in %s (OS user %s)", bins.major, l.data, usr.name)
	// A leftover directory without PG_VERSION comes from an interrupted initdb.
	if err := os.RemoveAll(l.data); err != nil {
		return fmt.Errorf("pglocal: %v", err)
	}
	if err := os.Mkdir(l.data, 0o700); err != nil {
		return fmt.Errorf("pglocal: %v", err)
	}
	pwfile := filepath.Join(l.dir, "pwfile.tmp")
	defer os.Remove(pwfile)
	pw, err := randomHex(16)
	if err != nil {
		return err
	}
	if err := os.WriteFile(pwfile, []byte(pw+"\n"), 0o600); err != nil {
		return fmt.Errorf("pglocal: %v", err)
	}
	if !usr.self {
		for _, p := range []string{l.data, pwfile} {
			if err := os.Chown(p, int(usr.uid), int(usr.gid)); err != nil {
				return fmt.Errorf("pglocal: %v", err)
			}
		}
	}
	if err := writeFileAtomic(l.password, []byte(pw+"\n"), 0o600); err != nil {
		return err
	}
	_, err = usr.run(ctx, l.dir, bins.initdb,
		"-D", l.data,
		"-U", "postgres",
		"-E", "UTF8",
		"--locale=C",
		"--auth-host=scram-sha-256",
		"--auth-local=peer",
		"--pwfile="+pwfile,
		"--no-instructions",
	)
	if err != nil {
		return err
	}
	// Settings for a development and test cluster. The port, the socket
	// directory and listen_addresses are passed at start (see start).
	conf := `
# Added by stele's internal/pglocal: a private development/test cluster.
max_connections = 200
shared_buffers = 128MB
fsync = on                      # keep: benchmarks must measure real durability
synchronous_commit = on
`
	f, err := os.OpenFile(filepath.Join(l.data, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("pglocal: %v", err)
	}
	_, err = f.WriteString(conf)
	if err2 := f.Close(); err == nil {
		err = err2
	}
	if err != nil {
		return fmt.Errorf("pglocal: %v", err)
	}
	return nil
}

// maxSocketDirLen keeps socket/.s.PGSQL.NNNNN within sun_path (108 bytes).
const maxSocketDirLen = 107 - len("/.s.PGSQL.65535")

// start starts the server and returns its port. It reuses the port recorded
// in l.port when free and retries once on a fresh port when the server fails
// because its port was taken.
func (l layout) start(ctx context.Context, bins binaries, usr osUser, opts Options) (int, error) {
	port := 0
	if b, err := os.ReadFile(l.port); err == nil {
		port, _ = strconv.Atoi(strings.TrimSpace(string(b)))
	}
	socket := l.socket
	if len(socket) > maxSocketDirLen {
		opts.logf("socket directory path %s is too long for a Unix socket; listening on TCP only", socket)
		socket = ""
	}
	for attempt := 0; ; attempt++ {
		if port <= 0 || !portFree(port) {
			p, err := freePort()
			if err != nil {
				return 0, err
			}
			port = p
		}
		opts.logf("starting PostgreSQL %d on 127.0.0.1:%d (log: %s)", bins.major, port, l.log)
		var logOffset int64
		if fi, err := os.Stat(l.log); err == nil {
			logOffset = fi.Size()
		}
		// pg_ctl passes -o through /bin/sh, hence the quoting.
		o := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1", port, shellQuote(socket))
		_, err := usr.run(ctx, l.dir, bins.pgCtl, "-D", l.data, "-l", l.log, "-w", "-t", "60", "-o", o, "start")
		if err == nil {
			return port, nil
		}
		logTail := readFrom(l.log, logOffset)
		if attempt == 0 && strings.Contains(logTail, "already in use") {
			port = 0
			continue
		}
		if line := serverError(logTail); line != "" {
			return 0, fmt.Errorf("pglocal: cannot start PostgreSQL in %s: %s (see %s)", l.data, line, l.log)
		}
		return 0, err
	}
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func readFrom(path string, off int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if _, err := f.Seek(off, 0); err != nil {
		return ""
	}
	var b bytes.Buffer
	_, _ = b.ReadFrom(f)
	return b.String()
}

var severityRE = regexp.MustCompile(`\b(FATAL|PANIC|ERROR):\s+`)

// serverError picks the most telling line of a server log excerpt: the last
// FATAL, PANIC or ERROR message, else the last line.
func serverError(log string) string {
	var last, severe string
	sc := bufio.NewScanner(strings.NewReader(log))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		last = line
		if loc := severityRE.FindStringIndex(line); loc != nil {
			severe = line[loc[0]:]
		}
	}
	if severe != "" {
		return oneLine(severe)
	}
	return oneLine(last)
}

func portFree(port int) bool {
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return false
	}
	ln.Close()
	return true
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pglocal: cannot find a free TCP port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("pglocal: %v", err)
	}
	return hex.EncodeToString(b), nil
}

// writeFileAtomic writes a file owned by the calling user via rename, so
// readers never see a partial file.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	tmp := fmt.Sprintf("%s.tmp%d", path, os.Getpid())
	if err := os.WriteFile(tmp, data, perm); err != nil {
		return fmt.Errorf("pglocal: %v", err)
	}
	if err := os.Chmod(tmp, perm); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("pglocal: %v", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("pglocal: %v", err)
	}
	return nil
}

// lock takes an exclusive flock on dir/lock, polling so that ctx can cancel
// the wait. The descriptor is close-on-exec, so the server never inherits it.
func lock(ctx context.Context, dir string) (unlock func(), err error) {
	path := filepath.Join(dir, "lock")
	// flock needs no write access, so a read-only descriptor suffices.
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("pglocal: %v", err)
	}
	fd := int(f.Fd())
	for {
		err := syscall.Flock(fd, syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() {
				_ = syscall.Flock(fd, syscall.LOCK_UN)
				f.Close()
			}, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			f.Close()
			return nil, fmt.Errorf("pglocal: lock %s: %v", path, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("pglocal: waiting for lock %s: %v", path, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func oneLine(s string) string {
	s = strings.TrimSpace(s)
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", "; ")), " ")
}
