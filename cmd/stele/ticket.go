package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"time"

	"github.com/cli/browser"
	"github.com/mdp/qrterminal/v3"
	"github.com/spf13/pflag"
	"golang.org/x/term"

	"stele.dev/stele/cli"
)

// ticketUI is how a command that waits for an approval shows it.
type ticketUI struct {
	// qr is "auto" (when standard error is a terminal), "always" or
	// "never".
	qr string
	// openBrowser opens the address in this machine's browser (for a
	// sign-in, where the approver is the person at this machine).
	openBrowser bool
}

func (u *ticketUI) register(fs *pflag.FlagSet) {
	fs.StringVar(&u.qr, "qr", "auto", "print the approval address as a QR code: auto (when a terminal shows it), always or never")
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// show prints where to approve the request and the code the page shows.
func (u *ticketUI) show(w io.Writer, t cli.Ticket, what string) {
	fmt.Fprintf(w, "To approve %s, open this address in a browser where you are signed in to Stele:\n\n    %s\n\n", what, t.VerificationURL)
	if u.qr == "always" || u.qr == "auto" && isTerminal(w) {
		qrterminal.GenerateWithConfig(t.VerificationURL, qrterminal.Config{
			Level: qrterminal.L, Writer: w, HalfBlocks: true,
			BlackChar: qrterminal.BLACK_BLACK, WhiteBlackChar: qrterminal.WHITE_BLACK,
			WhiteChar: qrterminal.WHITE_WHITE, BlackWhiteChar: qrterminal.BLACK_WHITE, QuietZone: 2,
		})
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "Open %s to approve this request.\nThe page must show the code %s. It expires at %s.\n",
		t.VerificationURL, t.UserCode, t.ExpiresAt.Local().Format("15:04:05"))
	if u.openBrowser && browserAvailable() {
		browser.Stdout, browser.Stderr = io.Discard, io.Discard
		if err := browser.OpenURL(t.VerificationURL); err == nil {
			fmt.Fprintln(w, "Opened it in your browser.")
		}
	}
}

// browserAvailable reports whether this machine can open a browser for
// its user: a desktop session, or $BROWSER.
func browserAvailable() bool {
	if os.Getenv("BROWSER") != "" {
		return true
	}
	switch runtime.GOOS {
	case "darwin", "windows":
		return true
	}
	return os.Getenv("DISPLAY") != "" || os.Getenv("WAYLAND_DISPLAY") != ""
}

// countdown shows the time left until expiry, once a second, on a
// terminal; elsewhere it prints one "Waiting…" line. The returned
// function stops it and clears the line.
func countdown(ctx context.Context, w io.Writer, expires time.Time) func() {
	if !isTerminal(w) {
		fmt.Fprintln(w, "Waiting…")
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			left := time.Until(expires).Round(time.Second)
			if left < 0 {
				left = 0
			}
			fmt.Fprintf(w, "\rWaiting… %d:%02d left ", int(left.Minutes()), int(left.Seconds())%60)
			select {
			case <-ctx.Done():
				fmt.Fprint(w, "\r\033[K")
				return
			case <-tick.C:
			}
		}
	}()
	return func() { cancel(); <-done }
}
