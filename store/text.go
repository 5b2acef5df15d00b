package store

import "fmt"

// CheckText checks a name a person chose (a custodian's) against the text
// rule of docs/FORMAT.md section 7, so that a command can refuse it before a
// ceremony begins rather than when its record is written.
func CheckText(s string) error {
	if p := textProblem([]byte(s), maxText); p != "" {
		return fmt.Errorf("%w: %s", ErrInvalid, p)
	}
	return nil
}
