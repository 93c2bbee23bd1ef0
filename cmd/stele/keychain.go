package main

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/99designs/keyring"
)

// keychainService names Stele's items in the OS keychain.
const keychainService = "stele"

// keychain keeps CLI sign-ins in the operating system's keychain: the
// macOS Keychain, the Windows Credential Manager, the Secret Service or
// KWallet on a Linux desktop, and the kernel's key retention service
// (keyctl, the user keyring) on a headless Linux machine. It never falls
// back to a file: a token is not written to disk in the clear, and an
// encrypted file would need a passphrase prompt on every command.
type keychain struct {
	kr      keyring.Keyring
	backend keyring.BackendType
}

// errNoKeychain: no keychain works here.
var errNoKeychain = errors.New("no OS keychain works here")

// openKeychain opens the first keychain that works. $STELE_KEYRING_BACKEND
// names one (keychain, wincred, secret-service, kwallet, keyctl, pass) to
// use only that.
func openKeychain() (*keychain, error) {
	var allowed []keyring.BackendType
	for _, b := range keyring.AvailableBackends() {
		if b != keyring.FileBackend {
			allowed = append(allowed, b)
		}
	}
	if want := strings.TrimSpace(os.Getenv("STELE_KEYRING_BACKEND")); want != "" {
		if !slices.Contains(allowed, keyring.BackendType(want)) {
			return nil, fmt.Errorf("%w: STELE_KEYRING_BACKEND=%s is not one of %v", errNoKeychain, want, allowed)
		}
		allowed = []keyring.BackendType{keyring.BackendType(want)}
	}
	for _, b := range allowed {
		kr, err := keyring.Open(keyring.Config{
			ServiceName:                    keychainService,
			AllowedBackends:                []keyring.BackendType{b},
			KeyCtlScope:                    "user",
			KeychainTrustApplication:       true,
			KeychainSynchronizable:         false,
			KeychainAccessibleWhenUnlocked: true,
			LibSecretCollectionName:        "login",
			KWalletAppID:                   keychainService,
			KWalletFolder:                  keychainService,
			WinCredPrefix:                  keychainService,
		})
		if err != nil {
			continue
		}
		// A backend may open and still fail on use (a Secret Service with
		// no unlocked collection): probe it.
		if _, err := kr.Keys(); err != nil {
			continue
		}
		return &keychain{kr: kr, backend: b}, nil
	}
	return nil, errNoKeychain
}

// item is the key of a server's sign-in.
func item(server string) string { return "signin:" + server }

// Get returns the sign-in stored for server.
func (k *keychain) Get(server string) (string, error) {
	it, err := k.kr.Get(item(server))
	if err != nil {
		return "", err
	}
	return string(it.Data), nil
}

// Set stores the sign-in for server.
func (k *keychain) Set(server, credential string) error {
	return k.kr.Set(keyring.Item{Key: item(server), Data: []byte(credential), Label: "Stele sign-in for " + server,
		Description: "Stele CLI session credential"})
}

// Remove drops the sign-in for server; removing one that is not there is
// not an error.
func (k *keychain) Remove(server string) error {
	err := k.kr.Remove(item(server))
	if err == nil || errors.Is(err, keyring.ErrKeyNotFound) || errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}
