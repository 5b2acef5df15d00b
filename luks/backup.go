package luks

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// BackupHeader writes a copy of the header and keyslots area to path
// (cryptsetup luksHeaderBackup), readable and writable by the owner only
// (0600). It refuses to overwrite an existing file, and leaves nothing at
// path if it fails.
//
// A header backup holds every keyslot as it is now: with it, any key that
// opens a keyslot today opens the volume's data for good, even after that
// keyslot is killed on the volume. Destroy the backup once it is no longer
// needed, or guard it like the keys themselves.
func (v *Volume) BackupHeader(ctx context.Context, path string) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return fmt.Errorf("back up header: %w", err)
	}
	if _, err := os.Lstat(abs); err == nil {
		return fmt.Errorf("back up header to %s: %w", abs, fs.ErrExist)
	}
	// cryptsetup writes into a private directory beside the destination;
	// the file is linked into place only once complete, so a failure
	// leaves no partial backup behind, and the link refuses to replace a
	// file that appeared meanwhile.
	dir, err := os.MkdirTemp(filepath.Dir(abs), ".custos-header-backup-")
	if err != nil {
		return fmt.Errorf("back up header: %w", err)
	}
	defer os.RemoveAll(dir)
	tmp := filepath.Join(dir, "header")
	if _, err := v.exec(ctx, run{op: "luksHeaderBackup", args: []string{
		"--batch-mode", "--header-backup-file=" + tmp, v.Path,
	}}); err != nil {
		return fmt.Errorf("back up header: %w", err)
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		return fmt.Errorf("back up header: %w", err)
	}
	if err := syncFile(tmp); err != nil {
		return fmt.Errorf("back up header: %w", err)
	}
	if err := os.Link(tmp, abs); err != nil {
		return fmt.Errorf("back up header to %s: %w", abs, err)
	}
	if err := syncFile(filepath.Dir(abs)); err != nil {
		return fmt.Errorf("back up header: %w", err)
	}
	return nil
}

func syncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// RestoreHeader writes the header backup at path over the volume's header
// (cryptsetup luksHeaderRestore). The backup must be a readable LUKS header;
// if the volume's own header can still be read, the two must have the same
// UUID (else ErrForeignBackup). Every keyslot added since the backup is
// lost, and every keyslot killed since comes back.
func (v *Volume) RestoreHeader(ctx context.Context, path string) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return fmt.Errorf("restore header: %w", err)
	}
	backup := &Volume{Path: abs, Cryptsetup: v.Cryptsetup}
	bh, err := backup.Inspect(ctx)
	if err != nil {
		return fmt.Errorf("restore header: read backup: %w", err)
	}
	cur, err := v.Inspect(ctx)
	switch {
	case err == nil:
		if cur.UUID != bh.UUID {
			return fmt.Errorf("restore header: backup %s has uuid %s, volume has %s: %w", abs, bh.UUID, cur.UUID, ErrForeignBackup)
		}
	case errors.Is(err, ErrDamagedHeader) || errors.Is(err, ErrNotLUKS):
		// The reason to restore: nothing on the volume to compare with.
	default:
		return fmt.Errorf("restore header: %w", err)
	}
	if _, err := v.exec(ctx, run{op: "luksHeaderRestore", args: []string{
		"--batch-mode", "--header-backup-file=" + abs, v.Path,
	}, write: true}); err != nil {
		return fmt.Errorf("restore header: %w", err)
	}
	after, err := v.Inspect(ctx)
	if err != nil {
		return fmt.Errorf("restore header: re-read header: %w", err)
	}
	if after.UUID != bh.UUID {
		return fmt.Errorf("restore header: volume has uuid %s afterwards, want %s", after.UUID, bh.UUID)
	}
	return nil
}
