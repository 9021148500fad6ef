//! Files the agent writes — the mismatch log, summaries, stats, pcaps,
//! exchanges, reports — hold captured production traffic, so they are
//! readable by their owner only: created with mode 0600, and an existing
//! file written again is set to 0600 too (a mode given at creation only
//! applies to a file that did not exist). The process umask can only take
//! permissions away, never add them.

use std::{
    fs::{File, OpenOptions, Permissions},
    io::{self, Write as _},
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::Path,
};

/// Owner read and write, nothing for group and others.
pub const MODE: u32 = 0o600;

/// Opens `path` with `options` (to which create and the mode are added) and
/// makes sure the file is 0600, whether it was created or already there.
pub fn open(path: &Path, options: &mut OpenOptions) -> io::Result<File> {
    let file = options.create(true).mode(MODE).open(path)?;
    file.set_permissions(Permissions::from_mode(MODE))?;
    Ok(file)
}

/// Creates (or truncates) `path` for writing, 0600.
pub fn create(path: &Path) -> io::Result<File> {
    open(path, OpenOptions::new().write(true).truncate(true))
}

/// Writes `bytes` as the whole content of `path`, 0600.
pub fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    create(path)?.write_all(bytes)
}

#[cfg(test)]
mod tests {
    use std::{fs, os::unix::fs::PermissionsExt as _};

    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn new_files_are_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new.json");
        write(&path, b"{}").unwrap();
        assert_eq!(mode(&path), MODE);
        assert_eq!(fs::read(&path).unwrap(), b"{}");
    }

    #[test]
    fn an_existing_readable_file_is_made_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.log");
        fs::write(&path, b"before\n").unwrap();
        fs::set_permissions(&path, Permissions::from_mode(0o644)).unwrap();
        let mut f = open(&path, OpenOptions::new().append(true)).unwrap();
        f.write_all(b"after\n").unwrap();
        assert_eq!(mode(&path), MODE);
        assert_eq!(fs::read(&path).unwrap(), b"before\nafter\n");
    }
}
