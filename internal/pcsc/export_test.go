package pcsc

// SetListBuffer sets the room ListReaders offers at first, for a test of
// a list longer than that; the returned func puts it back.
func SetListBuffer(n int) func() {
	old := listBuffer
	listBuffer = n
	return func() { listBuffer = old }
}
