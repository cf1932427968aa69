//! Typed messages: a small fixed little-endian encoding, so modules in
//! other languages can read them (`docs/guest-abi.md`, Message encoding).

/// A value that travels as a message.
///
/// Numbers are little-endian, fixed width; `bool` is one byte; strings and
/// byte vectors are their bytes (only as the last field of a tuple);
/// tuples are their fields in order.
pub trait Message: Sized {
    /// Appends the encoding to `out`.
    fn encode(&self, out: &mut Vec<u8>);
    /// Decodes one value, `None` when `bytes` is not exactly one.
    fn decode(bytes: &[u8]) -> Option<Self> {
        let (value, rest) = Self::decode_prefix(bytes)?;
        rest.is_empty().then_some(value)
    }
    /// Decodes a value at the start of `bytes`; returns it and the rest.
    fn decode_prefix(bytes: &[u8]) -> Option<(Self, &[u8])>;
    /// The encoding as a new vector (for snapshots).
    fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }
}

macro_rules! number {
    ($($t:ty),*) => {$(
        impl Message for $t {
            fn encode(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn decode_prefix(bytes: &[u8]) -> Option<(Self, &[u8])> {
                const N: usize = core::mem::size_of::<$t>();
                let head = bytes.get(..N)?;
                Some((<$t>::from_le_bytes(head.try_into().ok()?), &bytes[N..]))
            }
        }
    )*};
}
number!(u8, u16, u32, u64, i8, i16, i32, i64, f32, f64);

impl Message for bool {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(u8::from(*self));
    }
    fn decode_prefix(bytes: &[u8]) -> Option<(Self, &[u8])> {
        match bytes.first()? {
            0 => Some((false, &bytes[1..])),
            1 => Some((true, &bytes[1..])),
            _ => None,
        }
    }
}

impl Message for Vec<u8> {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self);
    }
    fn decode_prefix(bytes: &[u8]) -> Option<(Self, &[u8])> {
        Some((bytes.to_vec(), &[]))
    }
}

impl Message for String {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_bytes());
    }
    fn decode_prefix(bytes: &[u8]) -> Option<(Self, &[u8])> {
        Some((String::from_utf8(bytes.to_vec()).ok()?, &[]))
    }
}

macro_rules! tuple {
    ($($name:ident),+) => {
        impl<$($name: Message),+> Message for ($($name,)+) {
            #[allow(non_snake_case)]
            fn encode(&self, out: &mut Vec<u8>) {
                let ($($name,)+) = self;
                $($name.encode(out);)+
            }
            #[allow(non_snake_case)]
            fn decode_prefix(bytes: &[u8]) -> Option<(Self, &[u8])> {
                let rest = bytes;
                $(let ($name, rest) = $name::decode_prefix(rest)?;)+
                Some((($($name,)+), rest))
            }
        }
    };
}
tuple!(A, B);
tuple!(A, B, C);
tuple!(A, B, C, D);
