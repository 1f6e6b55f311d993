//! What the engine hands to its runtime: datagrams and stream messages to
//! send (`Transmit`), and the channel classes they travel on.

use bytes::{Bytes, BytesMut};
use smallvec::SmallVec;

use crate::addr::PeerAddr;

/// The two channel classes of DESIGN.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// Best effort (UDP in `almd`): Pastry/Scribe control and the multicast
    /// data path. Where a message must arrive, the engine acknowledges and
    /// retries it itself.
    Datagram,
    /// Reliable and ordered per peer (TCP in `almd`): MultiCache content.
    Stream,
}

/// A small header kept inline next to a shared body, so one received data
/// packet fans out to N children as N headers and N clones of one `Bytes`.
pub type InlineHeader = SmallVec<[u8; 64]>;

/// One message to send. The bytes on the wire are `header` then `body`.
#[must_use = "a Transmit that is not sent is a lost message"]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub to: PeerAddr,
    pub channel: Channel,
    pub header: InlineHeader,
    pub body: Bytes,
}

impl Transmit {
    /// A message that is all body (control messages).
    pub fn datagram(to: PeerAddr, body: Bytes) -> Self {
        Transmit {
            to,
            channel: Channel::Datagram,
            header: InlineHeader::new(),
            body,
        }
    }

    /// Length on the wire.
    #[inline]
    pub fn len(&self) -> usize {
        self.header.len() + self.body.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The wire bytes as one buffer. Free when the header is empty; one copy
    /// otherwise (runtimes that can, send `header` and `body` as two iovecs).
    #[inline]
    pub fn into_bytes(self) -> Bytes {
        if self.header.is_empty() {
            return self.body;
        }
        let mut b = BytesMut::with_capacity(self.len());
        b.extend_from_slice(&self.header);
        b.extend_from_slice(&self.body);
        b.freeze()
    }

    /// Copy the wire bytes into `out` (cleared first).
    pub fn write_to(&self, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&self.header);
        out.extend_from_slice(&self.body);
    }
}
