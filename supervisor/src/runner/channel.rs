//! Async framing over a child's pipes (the blocking form lives in
//! `studio_protocol::runner::frame`).

use serde::de::DeserializeOwned;
use serde::Serialize;
use studio_protocol::runner::frame::{check_len, decode, encode, FrameError, HEADER_LEN};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Reads one message; `Ok(None)` on a clean end of stream.
pub async fn read_msg<R, T>(r: &mut R, max: usize) -> Result<Option<T>, FrameError>
where
    R: AsyncRead + Unpin,
    T: DeserializeOwned,
{
    let mut header = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        let n = r.read(&mut header[got..]).await?;
        if n == 0 {
            if got == 0 {
                return Ok(None);
            }
            return Err(FrameError::Truncated {
                expected: HEADER_LEN,
                got,
            });
        }
        got += n;
    }
    let len = check_len(header, max)?;
    let mut body = Vec::with_capacity(len.min(64 * 1024));
    let got = (&mut *r).take(len as u64).read_to_end(&mut body).await?;
    if got < len {
        return Err(FrameError::Truncated { expected: len, got });
    }
    decode(&body).map(Some)
}

/// Writes one message and flushes.
pub async fn write_msg<W, T>(w: &mut W, msg: &T, max: usize) -> Result<(), FrameError>
where
    W: AsyncWrite + Unpin,
    T: Serialize,
{
    let bytes = encode(msg, max)?;
    w.write_all(&bytes).await?;
    w.flush().await?;
    Ok(())
}
