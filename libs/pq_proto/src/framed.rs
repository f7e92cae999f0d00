//! Async framing: reading whole messages from an `AsyncRead` and buffering messages for an
//! `AsyncWrite`.
//!
//! Invariants:
//! - A message is returned only when all of it has arrived; a reader never hands out a
//!   partial message, and a message longer than the caller's limit is refused from its
//!   length word alone (its body is never buffered), after which the connection must be
//!   closed.
//! - End of stream *between* messages is a clean close (`Ok(None)`); inside a message it
//!   is [`ProtocolError::UnexpectedEof`].
//! - Writers only buffer; nothing reaches the socket before [`MessageWriter::flush`], so a
//!   reply made of several messages goes out in one write.
//!
//! Readers and writers are separate types so the two directions of one connection can be
//! driven by different tasks (the safekeeper reads proposer messages on one task and
//! writes replies on another).

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::ProtocolError;
use crate::messages::{BeMessage, FeMessage};
use crate::startup::{FeStartupPacket, MAX_STARTUP_PACKET_LENGTH};

/// Reads length-prefixed messages from a byte stream.
#[derive(Debug)]
pub struct MessageReader<R> {
    stream: R,
    buf: BytesMut,
}

impl<R: AsyncRead + Unpin> MessageReader<R> {
    /// Wraps a stream (or its read half).
    pub fn new(stream: R) -> Self {
        MessageReader {
            stream,
            buf: BytesMut::with_capacity(8192),
        }
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &R {
        &self.stream
    }

    /// Unwraps the stream; bytes read ahead but not yet returned are handed back too.
    pub fn into_parts(self) -> (R, BytesMut) {
        (self.stream, self.buf)
    }

    /// Reads until `n` bytes are buffered. `Ok(false)` on EOF with nothing buffered.
    async fn fill(&mut self, n: usize, what: &'static str) -> Result<bool, ProtocolError> {
        while self.buf.len() < n {
            self.buf.reserve(n - self.buf.len());
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                if self.buf.is_empty() {
                    return Ok(false);
                }
                return Err(ProtocolError::UnexpectedEof(what));
            }
        }
        Ok(true)
    }

    /// Reads the untagged startup packet (`length i32, code i32, body`).
    pub async fn read_startup_packet(&mut self) -> Result<Option<FeStartupPacket>, ProtocolError> {
        if !self.fill(4, "startup packet").await? {
            return Ok(None);
        }
        let len = i32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
        let len = usize::try_from(len)
            .ok()
            .filter(|&l| l >= 8)
            .ok_or_else(|| {
                ProtocolError::malformed("startup packet", format!("invalid length {len}"))
            })?;
        if len > MAX_STARTUP_PACKET_LENGTH {
            return Err(ProtocolError::TooLarge {
                what: "startup packet".into(),
                len,
                max: MAX_STARTUP_PACKET_LENGTH,
            });
        }
        if !self.fill(len, "startup packet").await? {
            return Err(ProtocolError::UnexpectedEof("startup packet"));
        }
        let packet = self.buf.split_to(len);
        FeStartupPacket::parse(&packet[4..]).map(Some)
    }

    /// Reads one tagged message whose length word (which counts itself) is at most
    /// `max_len + 4`; returns the tag and the whole frame (tag and length included).
    pub async fn read_frame(
        &mut self,
        max_len: usize,
    ) -> Result<Option<(u8, BytesMut)>, ProtocolError> {
        if !self.fill(5, "message header").await? {
            return Ok(None);
        }
        let tag = self.buf[0];
        let len = i32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
        let body_len = usize::try_from(len)
            .ok()
            .and_then(|l| l.checked_sub(4))
            .ok_or_else(|| {
                ProtocolError::malformed(
                    "message header",
                    format!("invalid length {len} for tag {:?}", tag as char),
                )
            })?;
        if body_len > max_len {
            return Err(ProtocolError::TooLarge {
                what: format!("message {:?}", tag as char),
                len: body_len,
                max: max_len,
            });
        }
        if !self.fill(5 + body_len, "message body").await? {
            return Err(ProtocolError::UnexpectedEof("message body"));
        }
        Ok(Some((tag, self.buf.split_to(5 + body_len))))
    }

    /// Reads one frontend message (server side) with a body of at most `max_len` bytes.
    pub async fn read_fe_message(
        &mut self,
        max_len: usize,
    ) -> Result<Option<FeMessage>, ProtocolError> {
        let Some((tag, mut frame)) = self.read_frame(max_len).await? else {
            return Ok(None);
        };
        let body = frame.split_off(5).freeze();
        FeMessage::parse(tag, body).map(Some)
    }
}

/// Buffers outgoing messages for a byte stream.
#[derive(Debug)]
pub struct MessageWriter<W> {
    stream: W,
    buf: BytesMut,
}

impl<W: AsyncWrite + Unpin> MessageWriter<W> {
    /// Wraps a stream (or its write half).
    pub fn new(stream: W) -> Self {
        MessageWriter {
            stream,
            buf: BytesMut::with_capacity(8192),
        }
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &W {
        &self.stream
    }

    /// Bytes buffered and not yet flushed.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Buffers a backend message (server side).
    pub fn write_be(&mut self, msg: &BeMessage<'_>) {
        msg.write(&mut self.buf);
    }

    /// Buffers raw, already framed bytes (e.g. from `postgres_protocol`'s encoders).
    pub fn write_raw(&mut self, bytes: &[u8]) {
        self.buf.put_slice(bytes);
    }

    /// Direct access to the buffer, for `postgres_protocol`'s frontend encoders.
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Buffers one CopyData message whose payload `fill` writes straight into the buffer,
    /// so a protocol message or WAL chunk is encoded without an intermediate copy.
    pub fn write_copy_data_with<E>(
        &mut self,
        fill: impl FnOnce(&mut BytesMut) -> Result<(), E>,
    ) -> Result<(), E> {
        let start = self.buf.len();
        self.buf.put_u8(b'd');
        self.buf.put_i32(0);
        if let Err(e) = fill(&mut self.buf) {
            self.buf.truncate(start);
            return Err(e);
        }
        let len = (self.buf.len() - start - 1) as i32;
        self.buf[start + 1..start + 5].copy_from_slice(&len.to_be_bytes());
        Ok(())
    }

    /// Buffers one CopyData message with this payload.
    pub fn write_copy_data(&mut self, payload: &[u8]) {
        self.write_copy_data_with::<std::convert::Infallible>(|b| {
            b.put_slice(payload);
            Ok(())
        })
        .unwrap_or(());
    }

    /// Writes everything buffered and flushes the stream.
    pub async fn flush(&mut self) -> Result<(), ProtocolError> {
        if !self.buf.is_empty() {
            self.stream.write_all(&self.buf).await?;
            self.buf.clear();
        }
        self.stream.flush().await?;
        Ok(())
    }

    /// Flushes and shuts the write side down.
    pub async fn shutdown(&mut self) -> Result<(), ProtocolError> {
        self.flush().await?;
        self.stream.shutdown().await?;
        Ok(())
    }
}
