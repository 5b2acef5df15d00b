package escrow

import "custos.dev/custos/store"

// SafeText makes text read from a copy (a custodian's name from a token, a
// certificate or the log, a reason from a rollcall) safe to show on a
// terminal or in a transcript: docs/FORMAT.md section 13, store.ShowText.
func SafeText(s string) string { return store.ShowText(s) }

func safeText(s string) string { return store.ShowText(s) }
