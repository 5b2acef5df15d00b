package escrow

import (
	"strings"
	"unicode"
	"unicode/utf8"

	"custos.dev/custos/cards"
	"custos.dev/custos/store"
)

// SafeText makes text read from a copy (a custodian's name from a token, a
// certificate or the log, a reason from a rollcall) safe to show on a
// terminal or in a transcript: docs/FORMAT.md section 13, store.ShowText.
func SafeText(s string) string { return store.ShowText(s) }

func safeText(s string) string { return store.ShowText(s) }

// safeLine makes a message that may quote a certificate (an x509 error,
// an attestation's issuer) safe to show whole: every control, format or
// line-separating character, and every byte of invalid UTF-8, becomes
// '?'; nothing is cut.
func safeLine(s string) string {
	return strings.Map(func(c rune) rune {
		if c == utf8.RuneError || unicode.IsControl(c) || unicode.Is(unicode.Cf, c) || unicode.In(c, unicode.Zl, unicode.Zp) {
			return '?'
		}
		return c
	}, s)
}

// summaryOf describes a verified attestation for a person: its issuer
// (from a certificate, filtered as every name is), firmware and policies.
func summaryOf(a *cards.Attestation) string { return safeText(a.Issuer) + "; " + a.Policies() }
