package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"
)

// Child is a program that `stele run` starts with secrets in its
// environment.
type Child struct {
	// Argv is the program and its arguments; the program is looked up
	// in PATH.
	Argv []string
	// Env is the child's whole environment.
	Env []string
	// Stdin, Stdout and Stderr default to the parent's own.
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// Mask, when set, replaces these values in the child's output.
	Mask []string
	// ForwardInterrupts says whether SIGINT and SIGQUIT are passed on.
	// When the parent runs in a terminal, the terminal already sends them
	// to the whole foreground process group, child included, and passing
	// them on would deliver each one twice.
	ForwardInterrupts bool
}

// forwarded are the signals passed on to a running child.
var forwarded = []os.Signal{syscall.SIGTERM, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH, syscall.SIGINT, syscall.SIGQUIT}

// Running is a started child.
type Running struct {
	forwardInterrupts bool
	cmd               *exec.Cmd
	done              chan struct{}
	err               error
	maskers           []*Masker
	sigs              chan os.Signal
	stopSig           chan struct{}
	// Signalled holds the last terminating signal passed on (SIGTERM,
	// SIGINT, SIGHUP, SIGQUIT), or nil.
	signalled chan os.Signal
}

// Start starts the child and begins passing signals on to it.
func (c Child) Start() (*Running, error) {
	if len(c.Argv) == 0 {
		return nil, errors.New("no command to run")
	}
	path, err := exec.LookPath(c.Argv[0])
	if err != nil {
		return nil, fmt.Errorf("%s: %w", c.Argv[0], unwrapExecError(err))
	}
	cmd := &exec.Cmd{Path: path, Args: c.Argv, Env: c.Env}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = or(c.Stdin, io.Reader(os.Stdin)), or(c.Stdout, io.Writer(os.Stdout)), or(c.Stderr, io.Writer(os.Stderr))
	r := &Running{forwardInterrupts: c.ForwardInterrupts, cmd: cmd, done: make(chan struct{}), sigs: make(chan os.Signal, 8), stopSig: make(chan struct{}), signalled: make(chan os.Signal, 1)}
	if len(c.Mask) > 0 {
		out, errw := NewMasker(cmd.Stdout, c.Mask), NewMasker(cmd.Stderr, c.Mask)
		cmd.Stdout, cmd.Stderr = out, errw
		r.maskers = []*Masker{out, errw}
	}
	// Catch every one of them (interrupts too, so that they do not end
	// this process before the child). A caught signal is reset for the
	// child by exec, where an ignored one would stay ignored.
	signal.Notify(r.sigs, forwarded...)
	if err := cmd.Start(); err != nil {
		signal.Stop(r.sigs)
		return nil, fmt.Errorf("%s: %w", c.Argv[0], unwrapExecError(err))
	}
	go r.forward()
	go func() {
		r.err = cmd.Wait()
		for _, m := range r.maskers {
			m.Close()
		}
		signal.Stop(r.sigs)
		close(r.stopSig)
		close(r.done)
	}()
	return r, nil
}

func or[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// unwrapExecError drops exec's "exec: NAME:" prefix.
func unwrapExecError(err error) error {
	var ee *exec.Error
	if errors.As(err, &ee) {
		return ee.Err
	}
	return err
}

// forward passes the signals this process receives on to the child.
func (r *Running) forward() {
	for {
		select {
		case s := <-r.sigs:
			if r.forwardInterrupts || s != syscall.SIGINT && s != syscall.SIGQUIT {
				r.cmd.Process.Signal(s)
			}
			switch s {
			case syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT:
				select {
				case r.signalled <- s:
				default:
				}
			}
		case <-r.stopSig:
			return
		}
	}
}

// Done is closed when the child has ended.
func (r *Running) Done() <-chan struct{} { return r.done }

// Terminated receives the terminating signals passed on to the child.
func (r *Running) Terminated() <-chan os.Signal { return r.signalled }

// ExitCode is the child's exit status once Done is closed: its own exit
// code, or 128 plus the number of the signal that ended it, as shells
// report it.
func (r *Running) ExitCode() int {
	<-r.done
	var ee *exec.ExitError
	if errors.As(r.err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ee.ExitCode()
	}
	if r.err != nil {
		return 1
	}
	return 0
}

// Stop asks the child to end with SIGTERM and, if it has not ended after
// grace, kills it. It returns once the child has ended.
func (r *Running) Stop(grace time.Duration) {
	select {
	case <-r.done:
		return
	default:
	}
	r.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-r.done:
	case <-t.C:
		r.cmd.Process.Kill()
		<-r.done
	}
}
