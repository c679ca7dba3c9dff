//! PSRP messages (MS-PSRP 2.2.1): a 40-byte header and the data, which for every message this
//! crate builds is UTF-8 CLIXML preceded by a byte-order mark, as Windows PowerShell sends it.

use crate::guid::Guid;

/// Bytes of the header.
pub const HEADER_LEN: usize = 40;

const BOM: &[u8] = b"\xef\xbb\xbf";

/// Who a message is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    Client,
    Server,
    Other(u32),
}

impl Destination {
    pub fn code(self) -> u32 {
        match self {
            Destination::Client => 1,
            Destination::Server => 2,
            Destination::Other(n) => n,
        }
    }

    pub fn from_code(n: u32) -> Self {
        match n {
            1 => Destination::Client,
            2 => Destination::Server,
            n => Destination::Other(n),
        }
    }
}

macro_rules! message_types {
    ($($name:ident = $code:expr),* $(,)?) => {
        /// The message types of MS-PSRP 2.2.1; types this crate does not know keep their number.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[allow(non_camel_case_types, clippy::upper_case_acronyms)]
        pub enum MessageType {
            $($name,)*
            Unknown(u32),
        }

        impl MessageType {
            pub fn code(self) -> u32 {
                match self {
                    $(MessageType::$name => $code,)*
                    MessageType::Unknown(n) => n,
                }
            }

            pub fn from_code(n: u32) -> Self {
                match n {
                    $($code => MessageType::$name,)*
                    n => MessageType::Unknown(n),
                }
            }
        }
    };
}

message_types! {
    SESSION_CAPABILITY = 0x0001_0002,
    INIT_RUNSPACEPOOL = 0x0001_0004,
    PUBLIC_KEY = 0x0001_0005,
    ENCRYPTED_SESSION_KEY = 0x0001_0006,
    PUBLIC_KEY_REQUEST = 0x0001_0007,
    CONNECT_RUNSPACEPOOL = 0x0001_0008,
    SET_MAX_RUNSPACES = 0x0002_1002,
    SET_MIN_RUNSPACES = 0x0002_1003,
    RUNSPACE_AVAILABILITY = 0x0002_1004,
    RUNSPACEPOOL_STATE = 0x0002_1005,
    CREATE_PIPELINE = 0x0002_1006,
    GET_AVAILABLE_RUNSPACES = 0x0002_1007,
    USER_EVENT = 0x0002_1008,
    APPLICATION_PRIVATE_DATA = 0x0002_1009,
    GET_COMMAND_METADATA = 0x0002_100A,
    RUNSPACEPOOL_INIT_DATA = 0x0002_100B,
    RESET_RUNSPACE_STATE = 0x0002_100C,
    RUNSPACEPOOL_HOST_CALL = 0x0002_1100,
    RUNSPACEPOOL_HOST_RESPONSE = 0x0002_1101,
    PIPELINE_INPUT = 0x0004_1002,
    END_OF_PIPELINE_INPUT = 0x0004_1003,
    PIPELINE_OUTPUT = 0x0004_1004,
    ERROR_RECORD = 0x0004_1005,
    PIPELINE_STATE = 0x0004_1006,
    DEBUG_RECORD = 0x0004_1007,
    VERBOSE_RECORD = 0x0004_1008,
    WARNING_RECORD = 0x0004_1009,
    PROGRESS_RECORD = 0x0004_1010,
    INFORMATION_RECORD = 0x0004_1011,
    PIPELINE_HOST_CALL = 0x0004_1100,
    PIPELINE_HOST_RESPONSE = 0x0004_1101,
}

/// One PSRP message.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub destination: Destination,
    pub message_type: MessageType,
    pub runspace_pool_id: Guid,
    /// `Guid::NIL` for runspace-pool messages.
    pub pipeline_id: Guid,
    /// The data, byte-order mark removed.
    pub data: Vec<u8>,
}

/// A byte string too short to be a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a PSRP message is at least {HEADER_LEN} bytes; got {0}")]
pub struct MessageError(pub usize);

impl Message {
    pub fn new(
        destination: Destination,
        message_type: MessageType,
        runspace_pool_id: Guid,
        pipeline_id: Guid,
        data: impl Into<Vec<u8>>,
    ) -> Self {
        Message {
            destination,
            message_type,
            runspace_pool_id,
            pipeline_id,
            data: data.into(),
        }
    }

    /// The data as text (CLIXML); invalid UTF-8 is replaced.
    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        // Checked by `from_utf8`, which strides over ASCII a word at a time; the replacing
        // decoder walks byte by byte, and a listing's CLIXML is hundreds of megabytes of ASCII.
        match std::str::from_utf8(&self.data) {
            Ok(text) => std::borrow::Cow::Borrowed(text),
            Err(_) => String::from_utf8_lossy(&self.data),
        }
    }

    /// Header, byte-order mark, data.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + BOM.len() + self.data.len());
        self.encode_into(&mut out);
        out
    }

    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.destination.code().to_le_bytes());
        out.extend_from_slice(&self.message_type.code().to_le_bytes());
        out.extend_from_slice(&self.runspace_pool_id.to_dotnet_bytes());
        out.extend_from_slice(&self.pipeline_id.to_dotnet_bytes());
        if !self.data.is_empty() {
            out.extend_from_slice(BOM);
        }
        out.extend_from_slice(&self.data);
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, MessageError> {
        if bytes.len() < HEADER_LEN {
            return Err(MessageError(bytes.len()));
        }
        let u32_at = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().expect("4"));
        let guid_at = |i: usize| Guid::from_dotnet_bytes(bytes[i..i + 16].try_into().expect("16"));
        let data = &bytes[HEADER_LEN..];
        let data = data.strip_prefix(BOM).unwrap_or(data);
        Ok(Message {
            destination: Destination::from_code(u32_at(0)),
            message_type: MessageType::from_code(u32_at(4)),
            runspace_pool_id: guid_at(8),
            pipeline_id: guid_at(24),
            data: data.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout_follows_the_spec() {
        let rp: Guid = "00112233-4455-6677-8899-aabbccddeeff".parse().unwrap();
        let m = Message::new(
            Destination::Server,
            MessageType::SESSION_CAPABILITY,
            rp,
            Guid::NIL,
            b"<x/>".to_vec(),
        );
        let b = m.encode();
        assert_eq!(&b[0..4], &[2, 0, 0, 0]);
        assert_eq!(&b[4..8], &[0x02, 0x00, 0x01, 0x00]);
        assert_eq!(&b[8..12], &[0x33, 0x22, 0x11, 0x00]);
        assert_eq!(&b[24..40], &[0; 16]);
        assert_eq!(&b[40..43], BOM);
        assert_eq!(&b[43..], b"<x/>");
        assert_eq!(Message::decode(&b).unwrap(), m);
        assert_eq!(Message::decode(&b[..39]).unwrap_err(), MessageError(39));
    }

    #[test]
    fn text_borrows_utf8_data_and_replaces_what_is_not() {
        let message = |data: &[u8]| {
            Message::new(
                Destination::Client,
                MessageType::PIPELINE_OUTPUT,
                Guid::NIL,
                Guid::NIL,
                data.to_vec(),
            )
        };
        let m = message("<S>Gerät</S>".as_bytes());
        assert!(matches!(
            m.text(),
            std::borrow::Cow::Borrowed("<S>Gerät</S>")
        ));
        assert_eq!(message(b"<S>\xc3</S>").text(), "<S>\u{fffd}</S>");
    }

    #[test]
    fn message_types_round_trip_and_unknown_ones_keep_their_number() {
        for t in [
            MessageType::PIPELINE_OUTPUT,
            MessageType::APPLICATION_PRIVATE_DATA,
            MessageType::PIPELINE_HOST_CALL,
        ] {
            assert_eq!(MessageType::from_code(t.code()), t);
        }
        assert_eq!(MessageType::PIPELINE_OUTPUT.code(), 0x0004_1004);
        assert_eq!(MessageType::from_code(0x1234), MessageType::Unknown(0x1234));
        assert_eq!(MessageType::Unknown(0x1234).code(), 0x1234);
    }
}
