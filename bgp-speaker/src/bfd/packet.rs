//! BFD control packets (RFC 5880 section 4.1): encoding, and the checks of
//! section 6.8.6 that need no session state.

use serde::{Deserialize, Serialize};

pub(crate) const PACKET_LEN: usize = 24;

/// RFC 5880 session states (serialised by these names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BfdState {
    AdminDown = 0,
    Down = 1,
    Init = 2,
    Up = 3,
}

impl BfdState {
    /// The RFC's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::AdminDown => "AdminDown",
            Self::Down => "Down",
            Self::Init => "Init",
            Self::Up => "Up",
        }
    }

    fn from_bits(b: u8) -> Self {
        match b & 3 {
            0 => Self::AdminDown,
            1 => Self::Down,
            2 => Self::Init,
            _ => Self::Up,
        }
    }
}

/// A BFD control packet (no authentication section).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    pub diag: u8,
    pub state: BfdState,
    pub poll: bool,
    pub fin: bool,
    pub detect_mult: u8,
    pub my_disc: u32,
    pub your_disc: u32,
    pub desired_min_tx_us: u32,
    pub required_min_rx_us: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error("BFD packet too short ({0} bytes)")]
    Short(usize),
    #[error("BFD version {0} is not 1")]
    Version(u8),
    #[error("BFD length field {0} is invalid for a {1}-byte datagram")]
    Length(u8, usize),
    #[error("BFD authentication is not supported")]
    Auth,
    #[error("BFD detect multiplier is zero")]
    DetectMult,
    #[error("BFD multipoint bit set")]
    Multipoint,
    #[error("BFD my discriminator is zero")]
    MyDisc,
    #[error("BFD your discriminator is zero in state {0:?}")]
    YourDisc(BfdState),
}

impl Packet {
    pub fn encode(&self) -> [u8; PACKET_LEN] {
        let mut b = [0u8; PACKET_LEN];
        b[0] = (1 << 5) | (self.diag & 0x1f);
        b[1] = ((self.state as u8) << 6) | (u8::from(self.poll) << 5) | (u8::from(self.fin) << 4);
        b[2] = self.detect_mult;
        b[3] = PACKET_LEN as u8;
        b[4..8].copy_from_slice(&self.my_disc.to_be_bytes());
        b[8..12].copy_from_slice(&self.your_disc.to_be_bytes());
        b[12..16].copy_from_slice(&self.desired_min_tx_us.to_be_bytes());
        b[16..20].copy_from_slice(&self.required_min_rx_us.to_be_bytes());
        b
    }

    /// Decodes and applies the checks of RFC 5880 section 6.8.6 that do not
    /// need session state.
    pub fn decode(b: &[u8]) -> Result<Packet, PacketError> {
        if b.len() < PACKET_LEN {
            return Err(PacketError::Short(b.len()));
        }
        let version = b[0] >> 5;
        if version != 1 {
            return Err(PacketError::Version(version));
        }
        let len = b[3];
        if usize::from(len) < PACKET_LEN || usize::from(len) > b.len() {
            return Err(PacketError::Length(len, b.len()));
        }
        if b[1] & 0x04 != 0 {
            return Err(PacketError::Auth);
        }
        if b[1] & 0x01 != 0 {
            return Err(PacketError::Multipoint);
        }
        let u32_at = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let p = Packet {
            diag: b[0] & 0x1f,
            state: BfdState::from_bits(b[1] >> 6),
            poll: b[1] & 0x20 != 0,
            fin: b[1] & 0x10 != 0,
            detect_mult: b[2],
            my_disc: u32_at(4),
            your_disc: u32_at(8),
            desired_min_tx_us: u32_at(12),
            required_min_rx_us: u32_at(16),
        };
        if p.detect_mult == 0 {
            return Err(PacketError::DetectMult);
        }
        if p.my_disc == 0 {
            return Err(PacketError::MyDisc);
        }
        if p.your_disc == 0 && !matches!(p.state, BfdState::Down | BfdState::AdminDown) {
            return Err(PacketError::YourDisc(p.state));
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_roundtrip_and_checks() {
        let p = Packet {
            diag: 0,
            state: BfdState::Up,
            poll: true,
            fin: false,
            detect_mult: 3,
            my_disc: 7,
            your_disc: 9,
            desired_min_tx_us: 100_000,
            required_min_rx_us: 100_000,
        };
        assert_eq!(Packet::decode(&p.encode()), Ok(p));
        let mut b = p.encode();
        b[0] = 2 << 5;
        assert_eq!(Packet::decode(&b), Err(PacketError::Version(2)));
        let mut b = p.encode();
        b[2] = 0;
        assert_eq!(Packet::decode(&b), Err(PacketError::DetectMult));
        let mut b = p.encode();
        b[8..12].copy_from_slice(&[0; 4]);
        assert_eq!(Packet::decode(&b), Err(PacketError::YourDisc(BfdState::Up)));
        assert_eq!(Packet::decode(&b[..10]), Err(PacketError::Short(10)));
    }
}
