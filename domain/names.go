package domain

import (
	"regexp"
	"unicode/utf8"
)

// Limits and grammars of names. Secret names follow the environment
// variable grammar so that every secret can be exported to a shell.
const (
	MaxSecretNameLen = 128
	MaxNameLen       = 100 // display names of organizations, projects, environments, bundles, tokens
	MaxSlugLen       = 63
	MaxDescription   = 1000
	MaxTags          = 20
	MaxTagLen        = 64
	MaxReasonLen     = 500
	MaxBundleKeys    = 500
	// MaxCiphertext bounds a sealed value: a 64 KiB plaintext plus AEAD overhead, with room to spare.
	MaxCiphertext = 64<<10 + 1024
)

var (
	secretNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	slugRE       = regexp.MustCompile(`^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$`)
	idRE         = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`)
	// emailRE is deliberately narrow: the address forms that identity
	// providers verify in practice, lowercase, with no quoting, spaces or
	// colons (the actor text form splits on the first colon).
	emailRE = regexp.MustCompile(`^[a-z0-9.!#$%&'*+/=?^_{|}~-]+@[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)+$`)
)

// MaxUserIDLen bounds a user id (an e-mail address is at most 254 bytes).
const MaxUserIDLen = 254

// ValidUserID reports whether s can name a person: an identifier (see
// ValidID) or a lowercase e-mail address, which is how people signed in
// through OpenID Connect are known.
func ValidUserID(s string) bool {
	return ValidID(s) || (len(s) <= MaxUserIDLen && emailRE.MatchString(s))
}

func checkUserID(field, s string) error {
	if !ValidUserID(s) {
		return invalid(field, "%q: want an identifier or a lowercase e-mail address", clip(s))
	}
	return nil
}

// ValidSecretName reports whether s is a valid secret name: a letter or
// underscore, then letters, digits or underscores, at most 128 bytes.
func ValidSecretName(s string) bool { return len(s) <= MaxSecretNameLen && secretNameRE.MatchString(s) }

// ValidSlug reports whether s is a valid slug: lowercase letters, digits
// and inner hyphens, 1 to 63 bytes ("production", "eu-west").
func ValidSlug(s string) bool { return len(s) <= MaxSlugLen && slugRE.MatchString(s) }

// ValidID reports whether s can be an identifier (of an organization,
// project, environment, bundle, token, approval or user): 1 to 64 ASCII
// letters, digits, '_' or '-', starting with a letter or digit. Identifiers
// appear in stream names.
func ValidID(s string) bool { return idRE.MatchString(s) }

func checkID(field, s string) error {
	if !ValidID(s) {
		return invalid(field, "%q: want 1-64 letters, digits, '_' or '-'", clip(s))
	}
	return nil
}

func checkName(field, s string) error {
	if s == "" || len(s) > MaxNameLen || !utf8.ValidString(s) {
		return invalid(field, "want 1-%d bytes of UTF-8", MaxNameLen)
	}
	return nil
}

func checkSlug(field, s string) error {
	if !ValidSlug(s) {
		return invalid(field, "%q: want lowercase letters, digits and inner hyphens, at most %d bytes", clip(s), MaxSlugLen)
	}
	return nil
}

func checkSecretName(field, s string) error {
	if !ValidSecretName(s) {
		return invalid(field, "%q: want an environment variable name (a letter or _, then letters, digits or _), at most %d bytes", clip(s), MaxSecretNameLen)
	}
	return nil
}

func checkText(field, s string, max int) error {
	if len(s) > max || !utf8.ValidString(s) {
		return invalid(field, "want at most %d bytes of UTF-8", max)
	}
	return nil
}

func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
