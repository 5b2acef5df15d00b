package store

// failpoint, when set (by tests only), is called at each step of a write
// with the step's name. A non-nil error aborts the write at that step; a
// crash test's child process kills itself there instead. The names are
// listed in failpoints below.
var failpoint func(name string) error

// The steps of a write, in order.
const (
	fpCreateInitialized  = "create.initialized" // new file built under a temporary name
	fpCreateLinked       = "create.linked"      // new file linked to its final name, temporary name not yet removed
	fpUpdateBegin        = "update.begin"       // write transaction open, tail not yet checked
	fpUpdateTailChecked  = "update.tail-checked"
	fpAppendIndexed      = "append.indexed"   // indexes updated, event not yet stored
	fpAppendEventPut     = "append.event-put" // event stored, head record not yet
	fpUpdateBeforeCommit = "update.before-commit"
	fpUpdateCommitted    = "update.committed" // durable, caller not yet told
	fpMigrateStep        = "migrate.step"     // one schema migration applied, not committed
)

var failpoints = []string{
	fpCreateInitialized, fpCreateLinked, fpUpdateBegin, fpUpdateTailChecked,
	fpAppendIndexed, fpAppendEventPut, fpUpdateBeforeCommit, fpUpdateCommitted,
	fpMigrateStep,
}

func fail(name string) error {
	if failpoint != nil {
		return failpoint(name)
	}
	return nil
}
