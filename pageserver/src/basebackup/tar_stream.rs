//! A tar archive written as a stream: headers from the `tar` crate (GNU format, so
//! long names never need special handling), entries written in one pass to any
//! [`AsyncWrite`], with a file's contents supplied in pieces so that a 1 GiB relation
//! segment never has to be held in memory.
//!
//! Invariant: after [`TarStream::begin_file`] the caller writes exactly the announced
//! number of bytes before the next entry; [`TarStream::end_file`] checks it and pads.

use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Tar block size.
const BLOCK: usize = 512;

/// Writes a tar archive to `W`.
pub struct TarStream<W> {
    out: W,
    mtime: u64,
    /// Bytes still owed to the open file entry.
    owed: u64,
    /// Padding the open entry needs after its contents.
    pad: usize,
    /// Bytes of archive written (headers, contents, padding).
    written: u64,
}

impl<W> std::fmt::Debug for TarStream<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TarStream")
            .field("owed", &self.owed)
            .field("written", &self.written)
            .finish()
    }
}

impl<W: AsyncWrite + Unpin> TarStream<W> {
    /// An archive whose entries carry `mtime` (seconds since the epoch).
    pub fn new(out: W, mtime: u64) -> Self {
        TarStream {
            out,
            mtime,
            owed: 0,
            pad: 0,
            written: 0,
        }
    }

    /// Bytes of archive written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    fn header(
        &self,
        path: &str,
        kind: tar::EntryType,
        mode: u32,
        size: u64,
    ) -> std::io::Result<[u8; BLOCK]> {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(self.mtime);
        h.set_uid(0);
        h.set_gid(0);
        if path.len() >= 100 {
            // Our paths are short (`base/<oid>/<oid>_fsm.<n>`); refuse rather than emit a
            // GNU long-name entry nobody tested.
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("tar path too long: {path}"),
            ));
        }
        h.set_path(path)?;
        h.set_cksum();
        let mut block = [0u8; BLOCK];
        block.copy_from_slice(h.as_bytes());
        Ok(block)
    }

    async fn put(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.out.write_all(b).await?;
        self.written += b.len() as u64;
        Ok(())
    }

    fn check_closed(&self) -> std::io::Result<()> {
        if self.owed != 0 {
            return Err(std::io::Error::other(format!(
                "tar entry still owes {} bytes",
                self.owed
            )));
        }
        Ok(())
    }

    /// A directory entry (`path` without a trailing slash).
    pub async fn dir(&mut self, path: &str) -> std::io::Result<()> {
        self.check_closed()?;
        let h = self.header(&format!("{path}/"), tar::EntryType::Directory, 0o700, 0)?;
        self.put(&h).await
    }

    /// A whole file.
    pub async fn file(&mut self, path: &str, contents: &[u8]) -> std::io::Result<()> {
        self.begin_file(path, contents.len() as u64).await?;
        self.write(contents).await?;
        self.end_file().await
    }

    /// Starts a file of `size` bytes; its contents follow through [`TarStream::write`].
    pub async fn begin_file(&mut self, path: &str, size: u64) -> std::io::Result<()> {
        self.check_closed()?;
        let h = self.header(path, tar::EntryType::Regular, 0o600, size)?;
        self.put(&h).await?;
        self.owed = size;
        self.pad = (BLOCK - (size % BLOCK as u64) as usize) % BLOCK;
        Ok(())
    }

    /// Contents of the open file.
    pub async fn write(&mut self, b: &[u8]) -> std::io::Result<()> {
        if b.len() as u64 > self.owed {
            return Err(std::io::Error::other(format!(
                "tar entry got {} bytes more than announced",
                b.len() as u64 - self.owed
            )));
        }
        self.owed -= b.len() as u64;
        self.put(b).await
    }

    /// Ends the open file (pads it to a block).
    pub async fn end_file(&mut self) -> std::io::Result<()> {
        self.check_closed()?;
        let pad = std::mem::take(&mut self.pad);
        self.put(&[0u8; BLOCK][..pad]).await
    }

    /// Writes the end-of-archive marker and flushes; returns the writer.
    pub async fn finish(mut self) -> std::io::Result<W> {
        self.check_closed()?;
        self.put(&[0u8; 2 * BLOCK]).await?;
        self.out.flush().await?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_tar_crate_reads_what_we_write() {
        let mut t = TarStream::new(Vec::new(), 1_700_000_000);
        t.dir("base").await.unwrap();
        t.file("PG_VERSION", b"15\n").await.unwrap();
        t.begin_file("base/1/1259", 1000).await.unwrap();
        t.write(&[7u8; 600]).await.unwrap();
        t.write(&[8u8; 400]).await.unwrap();
        t.end_file().await.unwrap();
        t.file("empty", b"").await.unwrap();
        let bytes = t.finish().await.unwrap();
        assert_eq!(bytes.len() % BLOCK, 0);
        let mut a = tar::Archive::new(&bytes[..]);
        let mut seen = Vec::new();
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut data).unwrap();
            seen.push((e.path().unwrap().display().to_string(), data));
        }
        assert_eq!(seen[0].0, "base/");
        assert_eq!(seen[1], ("PG_VERSION".to_string(), b"15\n".to_vec()));
        assert_eq!(seen[2].1.len(), 1000);
        assert_eq!(seen[2].1[599], 7);
        assert_eq!(seen[2].1[600], 8);
        assert_eq!(seen[3], ("empty".to_string(), Vec::new()));
    }

    #[tokio::test]
    async fn a_short_or_long_entry_is_an_error() {
        let mut t = TarStream::new(Vec::new(), 0);
        t.begin_file("f", 10).await.unwrap();
        t.write(&[0u8; 4]).await.unwrap();
        assert!(t.end_file().await.is_err());
        let mut t = TarStream::new(Vec::new(), 0);
        t.begin_file("f", 2).await.unwrap();
        assert!(t.write(&[0u8; 3]).await.is_err());
        let mut t = TarStream::new(Vec::new(), 0);
        assert!(t.dir(&"x".repeat(120)).await.is_err());
    }
}
