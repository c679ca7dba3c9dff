//! Fragments (MS-PSRP 2.2.4): how a message is cut to fit a transport unit and put back together.
//!
//! A fragment is `ObjectId` (u64 BE), `FragmentId` (u64 BE, 0 for the first fragment of an
//! object), one flags byte (`Start` = 1, `End` = 2; a message in one fragment has both), the blob
//! length (u32 BE) and the blob. The fragments of one object are sent in order, each object's
//! after the previous object's started; a receiver gets them as a byte stream (a WS-Management
//! `Stream` element may hold several fragments, or a fragment may span two).

use std::collections::HashMap;

/// Bytes of a fragment before its blob.
pub const HEADER_LEN: usize = 21;

const START: u8 = 1;
const END: u8 = 2;

/// One fragment, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fragment {
    pub object_id: u64,
    pub fragment_id: u64,
    pub start: bool,
    pub end: bool,
    pub data: Vec<u8>,
}

impl Fragment {
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        write_fragment(
            out,
            self.object_id,
            self.fragment_id,
            self.start,
            self.end,
            &self.data,
        );
    }
}

fn write_fragment(
    out: &mut Vec<u8>,
    object_id: u64,
    fragment_id: u64,
    start: bool,
    end: bool,
    data: &[u8],
) {
    out.extend_from_slice(&object_id.to_be_bytes());
    out.extend_from_slice(&fragment_id.to_be_bytes());
    out.push(if start { START } else { 0 } | if end { END } else { 0 });
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
}

/// Cuts `message` (an encoded [`crate::Message`]) into fragments of at most `max_fragment`
/// bytes each, headers included, and returns each fragment's bytes.
///
/// `max_fragment` must exceed [`HEADER_LEN`]; smaller values are raised to `HEADER_LEN + 1`.
pub fn fragment(object_id: u64, message: &[u8], max_fragment: usize) -> Vec<Vec<u8>> {
    let room = max_fragment.max(HEADER_LEN + 1) - HEADER_LEN;
    let chunks: Vec<&[u8]> = if message.is_empty() {
        vec![&[][..]]
    } else {
        message.chunks(room).collect()
    };
    let last = chunks.len() - 1;
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, chunk)| {
            let mut out = Vec::with_capacity(HEADER_LEN + chunk.len());
            write_fragment(&mut out, object_id, i as u64, i == 0, i == last, chunk);
            out
        })
        .collect()
}

/// Assigns object ids and fragments messages, for one side of one runspace pool (object ids
/// are per sender and only ever grow).
#[derive(Debug)]
pub struct Fragmenter {
    next_object: u64,
    max_fragment: usize,
}

impl Fragmenter {
    /// `max_fragment`: the largest fragment, header included (WS-Management callers derive it
    /// from `MaxEnvelopeSize` minus the envelope, divided by 4/3 for base64).
    pub fn new(max_fragment: usize) -> Self {
        Fragmenter {
            next_object: 1,
            max_fragment,
        }
    }

    pub fn set_max_fragment(&mut self, max_fragment: usize) {
        self.max_fragment = max_fragment;
    }

    pub fn max_fragment(&self) -> usize {
        self.max_fragment
    }

    /// The fragments of one message, as separate byte strings.
    pub fn fragment(&mut self, message: &[u8]) -> Vec<Vec<u8>> {
        let id = self.next_object;
        self.next_object += 1;
        fragment(id, message, self.max_fragment)
    }
}

/// What makes a byte stream not a sequence of fragments.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FragmentError {
    #[error(
        "fragment {fragment_id} of object {object_id} announces {len} bytes, more than the limit of {limit}"
    )]
    TooLong {
        object_id: u64,
        fragment_id: u64,
        len: u64,
        limit: usize,
    },
    #[error("object {object_id}: fragment {got} arrived where fragment {expected} was due")]
    OutOfOrder {
        object_id: u64,
        expected: u64,
        got: u64,
    },
    #[error("object {object_id}: fragment {fragment_id} has the start flag but is not the first")]
    LateStart { object_id: u64, fragment_id: u64 },
    #[error("object {object_id}: its first fragment (0) lacks the start flag")]
    MissingStart { object_id: u64 },
    #[error("object {object_id}: reassembled message exceeds {limit} bytes")]
    MessageTooLong { object_id: u64, limit: usize },
    #[error("the stream ended inside a fragment ({have} of {need} bytes)")]
    Truncated { have: usize, need: usize },
}

/// Reassembles messages from a byte stream of fragments.
///
/// Fragments of one object must come in order (MS-PSRP 3.1.5.1.1: a receiver drops the
/// connection otherwise); fragments of different objects may interleave. A fragment split
/// across two `feed` calls is kept until its rest arrives.
#[derive(Debug)]
pub struct Reassembler {
    pending: Vec<u8>,
    partial: HashMap<u64, (u64, Vec<u8>)>,
    max_message: usize,
}

impl Default for Reassembler {
    fn default() -> Self {
        Self::new(64 << 20)
    }
}

impl Reassembler {
    /// `max_message`: the largest message accepted (a guard against garbage lengths).
    pub fn new(max_message: usize) -> Self {
        Reassembler {
            pending: Vec::new(),
            partial: HashMap::new(),
            max_message,
        }
    }

    /// Feeds bytes; returns each message completed by them, in completion order.
    ///
    /// Fragments are read where they lie: in `bytes` itself when nothing was pending (a
    /// listing's every `Stream` holds whole fragments), so that each message is copied once.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<Vec<u8>>, FragmentError> {
        let mut kept = std::mem::take(&mut self.pending);
        let from_kept = !kept.is_empty();
        if from_kept {
            kept.extend_from_slice(bytes);
        }
        let input: &[u8] = if from_kept { &kept } else { bytes };
        let read = self.read(input);
        let at = match &read {
            Ok((_, at)) => *at,
            Err(_) => input.len(),
        };
        // What follows the last whole fragment waits for the next bytes.
        if from_kept {
            kept.drain(..at);
        } else {
            kept.extend_from_slice(&bytes[at..]);
        }
        self.pending = kept;
        read.map(|(done, _)| done)
    }

    /// The messages whole fragments of `input` complete, and how many bytes they took.
    fn read(&mut self, input: &[u8]) -> Result<(Vec<Vec<u8>>, usize), FragmentError> {
        let mut done = Vec::new();
        let mut at = 0;
        while input.len() - at >= HEADER_LEN {
            let h = &input[at..at + HEADER_LEN];
            let object_id = u64::from_be_bytes(h[0..8].try_into().expect("8"));
            let fragment_id = u64::from_be_bytes(h[8..16].try_into().expect("8"));
            let flags = h[16];
            let len = u32::from_be_bytes(h[17..21].try_into().expect("4")) as usize;
            if len > self.max_message {
                return Err(FragmentError::TooLong {
                    object_id,
                    fragment_id,
                    len: len as u64,
                    limit: self.max_message,
                });
            }
            if input.len() - at < HEADER_LEN + len {
                break;
            }
            let data = &input[at + HEADER_LEN..at + HEADER_LEN + len];
            at += HEADER_LEN + len;
            let start = flags & START != 0;
            let end = flags & END != 0;
            if let Some(m) = self.accept(object_id, fragment_id, start, end, data)? {
                done.push(m);
            }
        }
        Ok((done, at))
    }

    /// Feeds one parsed fragment.
    pub fn accept(
        &mut self,
        object_id: u64,
        fragment_id: u64,
        start: bool,
        end: bool,
        data: &[u8],
    ) -> Result<Option<Vec<u8>>, FragmentError> {
        if start {
            if fragment_id != 0 {
                return Err(FragmentError::LateStart {
                    object_id,
                    fragment_id,
                });
            }
            if end {
                return Ok(Some(data.to_vec()));
            }
            // A restart of an unfinished object replaces it (the sender gave up on it).
            self.partial.insert(object_id, (1, data.to_vec()));
            return Ok(None);
        }
        let Some((expected, buf)) = self.partial.get_mut(&object_id) else {
            return Err(if fragment_id == 0 {
                FragmentError::MissingStart { object_id }
            } else {
                FragmentError::OutOfOrder {
                    object_id,
                    expected: 0,
                    got: fragment_id,
                }
            });
        };
        if *expected != fragment_id {
            let expected = *expected;
            self.partial.remove(&object_id);
            return Err(FragmentError::OutOfOrder {
                object_id,
                expected,
                got: fragment_id,
            });
        }
        if buf.len() + data.len() > self.max_message {
            self.partial.remove(&object_id);
            return Err(FragmentError::MessageTooLong {
                object_id,
                limit: self.max_message,
            });
        }
        buf.extend_from_slice(data);
        *expected += 1;
        if end {
            return Ok(self.partial.remove(&object_id).map(|(_, b)| b));
        }
        Ok(None)
    }

    /// Whether bytes or unfinished objects are waiting.
    pub fn is_idle(&self) -> bool {
        self.pending.is_empty() && self.partial.is_empty()
    }

    /// An error if the stream stopped inside a fragment.
    pub fn finish(&self) -> Result<(), FragmentError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let need = if self.pending.len() >= HEADER_LEN {
            HEADER_LEN + u32::from_be_bytes(self.pending[17..21].try_into().expect("4")) as usize
        } else {
            HEADER_LEN
        };
        Err(FragmentError::Truncated {
            have: self.pending.len(),
            need,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_message_is_one_fragment_with_both_flags() {
        let f = fragment(1, b"abc", 100);
        assert_eq!(f.len(), 1);
        assert_eq!(
            f[0],
            [
                0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 3, b'a', b'b', b'c'
            ]
        );
    }

    #[test]
    fn fragments_respect_the_limit_and_reassemble_byte_by_byte() {
        let msg: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let mut f = Fragmenter::new(HEADER_LEN + 64);
        let frags = f.fragment(&msg);
        assert_eq!(frags.len(), 16);
        assert!(frags.iter().all(|x| x.len() <= HEADER_LEN + 64));
        assert_eq!(frags[0][16], START);
        assert_eq!(frags[15][16], END);
        assert_eq!(frags[3][16], 0);
        let stream: Vec<u8> = frags.concat();
        let mut r = Reassembler::default();
        let mut out = Vec::new();
        for b in &stream {
            out.extend(r.feed(std::slice::from_ref(b)).unwrap());
        }
        assert_eq!(out, vec![msg]);
        assert!(r.is_idle());
        r.finish().unwrap();
    }

    #[test]
    fn whole_fragments_then_a_split_one_complete_in_order() {
        let a = fragment(1, b"first", 100);
        let b = fragment(2, &[7; 40], HEADER_LEN + 25);
        let mut stream = a[0].clone();
        stream.extend(b.concat());
        let cut = a[0].len() + b[0].len() + 5;
        let mut r = Reassembler::default();
        assert_eq!(r.feed(&stream[..cut]).unwrap(), vec![b"first".to_vec()]);
        assert!(!r.is_idle());
        assert_eq!(r.feed(&stream[cut..]).unwrap(), vec![vec![7; 40]]);
        assert!(r.is_idle());
    }

    #[test]
    fn interleaved_objects_complete_independently() {
        let a = fragment(1, &[1; 50], HEADER_LEN + 20);
        let b = fragment(2, &[2; 10], HEADER_LEN + 20);
        let mut stream = a[0].clone();
        stream.extend(&b[0]);
        stream.extend(a[1..].concat());
        let out = Reassembler::default().feed(&stream).unwrap();
        assert_eq!(out, vec![vec![2; 10], vec![1; 50]]);
    }

    #[test]
    fn out_of_order_and_garbage_are_clear_errors() {
        let a = fragment(7, &[1; 50], HEADER_LEN + 20);
        let mut stream = a[0].clone();
        stream.extend(&a[2]);
        assert_eq!(
            Reassembler::default().feed(&stream).unwrap_err(),
            FragmentError::OutOfOrder {
                object_id: 7,
                expected: 1,
                got: 2
            }
        );
        assert_eq!(
            Reassembler::default().feed(&a[1]).unwrap_err(),
            FragmentError::OutOfOrder {
                object_id: 7,
                expected: 0,
                got: 1
            }
        );
        let mut garbage = vec![0u8; 17];
        garbage.extend_from_slice(&u32::MAX.to_be_bytes());
        let e = Reassembler::new(1 << 20).feed(&garbage).unwrap_err();
        assert!(matches!(e, FragmentError::TooLong { .. }), "{e}");
        let mut r = Reassembler::default();
        r.feed(&a[0][..10]).unwrap();
        assert_eq!(
            r.finish().unwrap_err(),
            FragmentError::Truncated {
                have: 10,
                need: HEADER_LEN
            }
        );
    }
}
