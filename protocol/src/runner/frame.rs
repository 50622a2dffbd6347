//! Length-prefixed framing: `u32` big-endian length, then the body.
//!
//! A clean end of stream *between* frames is `Ok(None)`; a stream that ends
//! inside a header or body is [`FrameError::Truncated`]. A length above the
//! cap is [`FrameError::TooLarge`] and nothing is allocated for it.

use std::io::{self, Read, Write};

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Default hard cap on one frame body: 64 MiB.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 64 * 1024 * 1024;

/// Bytes in a frame header.
pub const HEADER_LEN: usize = 4;

/// What can go wrong on the channel.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The underlying pipe failed.
    #[error("channel i/o: {0}")]
    Io(#[from] io::Error),
    /// The stream ended inside a frame.
    #[error("channel closed mid-frame ({got} of {expected} bytes)")]
    Truncated {
        /// Bytes the frame needed.
        expected: usize,
        /// Bytes that arrived.
        got: usize,
    },
    /// The header announced more than the cap.
    #[error("frame of {len} bytes exceeds the {max}-byte cap")]
    TooLarge {
        /// Announced length.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// The body is not a valid message.
    #[error("undecodable frame: {0}")]
    Decode(String),
    /// A message could not be encoded.
    #[error("cannot encode message: {0}")]
    Encode(String),
}

/// Checks an announced length against the cap.
pub fn check_len(header: [u8; HEADER_LEN], max: usize) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(header) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    Ok(len)
}

/// Serialises a message (MessagePack with field names) into one frame.
pub fn encode<T: Serialize>(msg: &T, max: usize) -> Result<Vec<u8>, FrameError> {
    let mut out = vec![0u8; HEADER_LEN];
    rmp_serde::encode::write_named(&mut out, msg).map_err(|e| FrameError::Encode(e.to_string()))?;
    let len = out.len() - HEADER_LEN;
    if len > max || len > u32::MAX as usize {
        return Err(FrameError::TooLarge { len, max });
    }
    out[..HEADER_LEN].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(out)
}

/// Decodes one frame body.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    rmp_serde::from_slice(body).map_err(|e| FrameError::Decode(e.to_string()))
}

/// Reads frames from a blocking reader.
pub struct FrameReader<R> {
    inner: R,
    max: usize,
}

impl<R: Read> FrameReader<R> {
    /// Wraps `inner` with a frame cap of `max` bytes.
    pub fn new(inner: R, max: usize) -> Self {
        Self { inner, max }
    }

    /// The next frame body; `Ok(None)` on a clean end of stream.
    pub fn read_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        let mut header = [0u8; HEADER_LEN];
        let got = read_full(&mut self.inner, &mut header)?;
        if got == 0 {
            return Ok(None);
        }
        if got < HEADER_LEN {
            return Err(FrameError::Truncated {
                expected: HEADER_LEN,
                got,
            });
        }
        let len = check_len(header, self.max)?;
        // Grow with the data actually received, never with the header's
        // claim alone.
        let mut body = Vec::with_capacity(len.min(64 * 1024));
        let got = (&mut self.inner).take(len as u64).read_to_end(&mut body)?;
        if got < len {
            return Err(FrameError::Truncated { expected: len, got });
        }
        Ok(Some(body))
    }

    /// The next decoded message; `Ok(None)` on a clean end of stream.
    pub fn read<T: DeserializeOwned>(&mut self) -> Result<Option<T>, FrameError> {
        match self.read_frame()? {
            Some(body) => decode(&body).map(Some),
            None => Ok(None),
        }
    }
}

fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Writes frames to a blocking writer.
pub struct FrameWriter<W> {
    inner: W,
    max: usize,
}

impl<W: Write> FrameWriter<W> {
    /// Wraps `inner` with a frame cap of `max` bytes.
    pub fn new(inner: W, max: usize) -> Self {
        Self { inner, max }
    }

    /// Encodes, writes and flushes one message.
    pub fn write<T: Serialize>(&mut self, msg: &T) -> Result<(), FrameError> {
        let bytes = encode(msg, self.max)?;
        self.inner.write_all(&bytes)?;
        self.inner.flush()?;
        Ok(())
    }

    /// The underlying writer (for raw access in fault-injection tests).
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// The frame cap.
    pub fn max(&self) -> usize {
        self.max
    }
}
