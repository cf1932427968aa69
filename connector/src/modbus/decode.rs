//! Register values ⇄ numbers: the pure part of the modbus driver.
//!
//! Modbus moves 16-bit registers (each sent high byte first on the wire)
//! and single bits. Devices pack wider values into consecutive registers in
//! one of four layouts, named here by two orders: `byte_order` (inside each
//! register: `little` swaps its two bytes) and `word_order` (for 32-bit
//! values: `big` = the first register holds the high word). Big/big is
//! "ABCD", big/little "CDAB", little/big "BADC", little/little "DCBA".
//! The published number is `raw * scale + offset`; a write applies the
//! inverse and refuses what does not fit the type.

use serde::Deserialize;

/// A Modbus data table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Table {
    /// Holding registers (read 0x03, write 0x06/0x10).
    Holding,
    /// Input registers (read 0x04, read-only).
    Input,
    /// Coils (read 0x01, write 0x05).
    Coil,
    /// Discrete inputs (read 0x02, read-only).
    Discrete,
}

impl Table {
    /// Whether the table holds bits (coils, discrete inputs), not registers.
    pub fn is_bits(self) -> bool {
        matches!(self, Table::Coil | Table::Discrete)
    }

    /// The name used in the policy.
    pub fn name(self) -> &'static str {
        match self {
            Table::Holding => "holding",
            Table::Input => "input",
            Table::Coil => "coil",
            Table::Discrete => "discrete",
        }
    }
}

/// The type a value has on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueType {
    /// Unsigned 16-bit, one register.
    U16,
    /// Signed 16-bit (two's complement), one register.
    I16,
    /// Unsigned 32-bit, two registers.
    U32,
    /// Signed 32-bit, two registers.
    I32,
    /// IEEE 754 single precision, two registers.
    F32,
    /// One bit: a coil, a discrete input, or one bit of a register.
    Bool,
}

impl ValueType {
    /// Registers the type occupies (a bool in a register table: one).
    pub fn registers(self) -> u16 {
        match self {
            ValueType::U32 | ValueType::I32 | ValueType::F32 => 2,
            ValueType::U16 | ValueType::I16 | ValueType::Bool => 1,
        }
    }

    /// The name used in the policy.
    pub fn name(self) -> &'static str {
        match self {
            ValueType::U16 => "u16",
            ValueType::I16 => "i16",
            ValueType::U32 => "u32",
            ValueType::I32 => "i32",
            ValueType::F32 => "f32",
            ValueType::Bool => "bool",
        }
    }
}

/// Byte order inside a register, or word order of a 32-bit value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    /// Most significant first (the Modbus standard).
    #[default]
    Big,
    /// Least significant first.
    Little,
}

/// How one value is laid out on the device and scaled for the channel.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Format {
    /// The device's type.
    pub ty: ValueType,
    /// Byte order inside each register.
    pub byte_order: Order,
    /// Word order of 32-bit values.
    pub word_order: Order,
    /// Published value = raw * scale + offset.
    pub scale: f64,
    /// See `scale`.
    pub offset: f64,
    /// For a bool in a register table: the bit (0 = least significant).
    pub bit: Option<u8>,
}

impl Format {
    /// A plain format of `ty`: big/big, no scaling, no bit.
    #[cfg(test)]
    pub fn plain(ty: ValueType) -> Self {
        Self {
            ty,
            byte_order: Order::Big,
            word_order: Order::Big,
            scale: 1.0,
            offset: 0.0,
            bit: None,
        }
    }
}

/// A decoded value, ready for a channel.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    /// A number after scale and offset.
    Number(f64),
    /// A bit.
    Bool(bool),
}

impl Value {
    /// The channel message: `f64` little-endian (8 bytes), or a bool as one
    /// byte (0 or 1) — the SDKs' fixed encoding.
    pub fn to_message(self) -> Vec<u8> {
        match self {
            Value::Number(v) => v.to_le_bytes().to_vec(),
            Value::Bool(b) => vec![u8::from(b)],
        }
    }
}

/// What a write puts on the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encoded {
    /// Registers, in address order (one: write single register; two:
    /// write multiple registers).
    Registers(Vec<u16>),
    /// A coil.
    Coil(bool),
}

/// Why a value cannot be written as its type.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EncodeError {
    /// NaN or infinite (before or after the inverse scaling).
    #[error("{0} is not a finite number")]
    NotFinite(f64),
    /// Outside the type's range after the inverse scaling.
    #[error("{value} (raw {raw}) does not fit {ty}")]
    OutOfRange {
        /// The value from the message.
        value: f64,
        /// After the inverse scaling.
        raw: f64,
        /// The type's name.
        ty: &'static str,
    },
    /// A bool takes exactly 0 or 1.
    #[error("{0} is not a bool: send 0 or 1")]
    NotBool(f64),
    /// A bit inside a register cannot be written alone.
    #[error("writing one bit of a register is not supported")]
    RegisterBit,
}

fn unswap(register: u16, order: Order) -> u16 {
    match order {
        Order::Big => register,
        Order::Little => register.swap_bytes(),
    }
}

/// The 32-bit word of two registers (already byte-ordered).
fn join(first: u16, second: u16, word_order: Order) -> u32 {
    let (high, low) = match word_order {
        Order::Big => (first, second),
        Order::Little => (second, first),
    };
    (u32::from(high) << 16) | u32::from(low)
}

/// Decodes the `registers` a value occupies (exactly
/// `format.ty.registers()` of them, first address first).
///
/// Returns `None` if the count is wrong (a device that answered short).
pub fn decode_registers(format: &Format, registers: &[u16]) -> Option<Value> {
    if registers.len() != usize::from(format.ty.registers()) {
        return None;
    }
    let r: Vec<u16> = registers
        .iter()
        .map(|&r| unswap(r, format.byte_order))
        .collect();
    let raw = match format.ty {
        ValueType::Bool => {
            let bit = format.bit.unwrap_or(0);
            return Some(Value::Bool(bit < 16 && r[0] & (1 << bit) != 0));
        }
        ValueType::U16 => f64::from(r[0]),
        // Two's complement reinterpretation, the point of the type.
        ValueType::I16 => f64::from(r[0] as i16),
        ValueType::U32 => f64::from(join(r[0], r[1], format.word_order)),
        ValueType::I32 => f64::from(join(r[0], r[1], format.word_order) as i32),
        ValueType::F32 => f64::from(f32::from_bits(join(r[0], r[1], format.word_order))),
    };
    Some(Value::Number(raw * format.scale + format.offset))
}

/// Decodes a coil or discrete input.
pub fn decode_bit(bit: bool) -> Value {
    Value::Bool(bit)
}

/// The registers of a 32-bit word in `format`'s orders.
fn split(word: u32, format: &Format) -> Vec<u16> {
    // Truncations pick the halves of the word.
    let (high, low) = ((word >> 16) as u16, word as u16);
    let words = match format.word_order {
        Order::Big => [high, low],
        Order::Little => [low, high],
    };
    words
        .iter()
        .map(|&w| unswap(w, format.byte_order))
        .collect()
}

/// The raw integer for `value`, if it is in `min..=max` once rounded.
fn integer(value: f64, raw: f64, min: f64, max: f64, ty: &'static str) -> Result<i64, EncodeError> {
    let rounded = raw.round();
    if rounded < min || rounded > max {
        return Err(EncodeError::OutOfRange { value, raw, ty });
    }
    // In range of the (at most 32-bit) type, so exact in i64.
    Ok(rounded as i64)
}

/// Encodes `value` (as published: scaled) for a write: applies the inverse
/// of scale/offset, rounds integers to the nearest, refuses what does not
/// fit the type. A bool takes 0 or 1 (no scaling).
///
/// # Errors
/// [`EncodeError`]: the value cannot be written as this format.
pub fn encode(format: &Format, table: Table, value: f64) -> Result<Encoded, EncodeError> {
    if !value.is_finite() {
        return Err(EncodeError::NotFinite(value));
    }
    if format.ty == ValueType::Bool {
        let bit = if value == 0.0 {
            false
        } else if value == 1.0 {
            true
        } else {
            return Err(EncodeError::NotBool(value));
        };
        if table.is_bits() {
            return Ok(Encoded::Coil(bit));
        }
        return Err(EncodeError::RegisterBit);
    }
    let raw = (value - format.offset) / format.scale;
    if !raw.is_finite() {
        return Err(EncodeError::NotFinite(raw));
    }
    let ty = format.ty.name();
    let registers = match format.ty {
        ValueType::U16 => {
            let v = integer(value, raw, 0.0, f64::from(u16::MAX), ty)?;
            vec![unswap(v as u16, format.byte_order)]
        }
        ValueType::I16 => {
            let v = integer(value, raw, f64::from(i16::MIN), f64::from(i16::MAX), ty)?;
            // Two's complement bits of the checked value.
            vec![unswap(v as i16 as u16, format.byte_order)]
        }
        ValueType::U32 => {
            let v = integer(value, raw, 0.0, f64::from(u32::MAX), ty)?;
            split(v as u32, format)
        }
        ValueType::I32 => {
            let v = integer(value, raw, f64::from(i32::MIN), f64::from(i32::MAX), ty)?;
            split(v as i32 as u32, format)
        }
        ValueType::F32 => {
            if raw.abs() > f64::from(f32::MAX) {
                return Err(EncodeError::OutOfRange { value, raw, ty });
            }
            // Nearest f32: the type's precision is what the device holds.
            split((raw as f32).to_bits(), format)
        }
        // Handled above; kept total instead of panicking.
        ValueType::Bool => return Err(EncodeError::RegisterBit),
    };
    Ok(Encoded::Registers(registers))
}

/// A write message: `(u16 address, f64 value)` little-endian, 10 bytes.
///
/// Returns `None` for any other length.
pub fn parse_write(payload: &[u8]) -> Option<(u16, f64)> {
    let bytes: &[u8; 10] = payload.try_into().ok()?;
    let address = u16::from_le_bytes([bytes[0], bytes[1]]);
    let mut value = [0u8; 8];
    value.copy_from_slice(&bytes[2..]);
    Some((address, f64::from_le_bytes(value)))
}
