package store

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// release drops the pages of the log's file that this process has mapped
// (bbolt reads through a read-only shared mapping of the whole file) from
// the process's page tables: they stay in the page cache and are mapped
// again on the next read. A long read (Verify) calls it as it goes, so
// that the resident set does not grow with the file. The mapping is found
// in /proc/self/maps by the file's device and inode.
func (b boltKV) release() {
	if start, end, ok := b.mapping(); ok {
		unix.Syscall(unix.SYS_MADVISE, start, end-start, unix.MADV_DONTNEED)
	}
}

// mappings caches where each file is mapped, by path and the mapping's
// size as bbolt last made it (a remap makes another entry).
var mappings sync.Map // string -> [2]uintptr

func (b boltKV) mapping() (uintptr, uintptr, bool) {
	key := fmt.Sprintf("%s@%d", b.btx.DB().Path(), b.btx.Size())
	if m, ok := mappings.Load(key); ok {
		r := m.([2]uintptr)
		return r[0], r[1], true
	}
	start, end, ok := b.findMapping()
	if ok {
		mappings.Store(key, [2]uintptr{start, end})
	}
	return start, end, ok
}

func (b boltKV) findMapping() (uintptr, uintptr, bool) {
	var st syscall.Stat_t
	if err := syscall.Stat(b.btx.DB().Path(), &st); err != nil {
		return 0, 0, false
	}
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return 0, 0, false
	}
	defer f.Close()
	dev := fmt.Sprintf("%02x:%02x", unix.Major(st.Dev), unix.Minor(st.Dev))
	ino := strconv.FormatUint(st.Ino, 10)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// start-end perms offset dev inode path
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || fields[3] != dev || fields[4] != ino || !strings.HasPrefix(fields[1], "r") || strings.Contains(fields[1], "w") {
			continue
		}
		lo, hi, ok := strings.Cut(fields[0], "-")
		if !ok {
			continue
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil || end <= start {
			continue
		}
		return uintptr(start), uintptr(end), true
	}
	return 0, 0, false
}
