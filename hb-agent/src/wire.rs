//! Heartbeat packets in userspace: building, decoding, and authenticating them with the
//! keys from `authkeys`.
//!
//! The layout itself lives in [`hb_common::wire`], shared with the XDP program. This module
//! adds what the kernel cannot do: the MAC. It covers all 80 bytes with the `mac` field
//! zeroed, using the method of the key named by the packet's `key_index`:
//!
//! | method | MAC                         | bytes used |
//! |--------|-----------------------------|------------|
//! | sha1   | HMAC-SHA1(secret, packet)   | 20         |
//! | md5    | HMAC-MD5(secret, packet)    | 16         |
//! | crc    | CRC-32(packet), no key      | 4          |
//!
//! Unused MAC bytes are zero and must be zero on receipt.

use hb_common::wire::{Heartbeat, MessageKind, NodeState, ShapeError, MAC_LEN, PACKET_LEN};
use hmac::{Hmac, Mac};

use crate::config::{AuthKey, AuthKeys, AuthMethod};

type HmacSha1 = Hmac<sha1::Sha1>;
type HmacMd5 = Hmac<md5::Md5>;

/// Why a received packet was not accepted as authentic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("packet signed with key index {0}, which authkeys does not have")]
    UnknownKey(u8),
    #[error("MAC does not match (wrong key or altered packet)")]
    BadMac,
}

/// `authkeys` could not be turned into an authenticator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("active key index {0} is not defined in authkeys")]
    MissingActiveKey(u8),
    #[error("key index {0} is outside 1-15")]
    IndexOutOfRange(u8),
}

/// Signs outgoing packets with the active key and verifies incoming ones with whichever
/// key they name, as Heartbeat did (so keys can be rotated one node at a time).
#[derive(Clone)]
pub struct Authenticator {
    active: u8,
    /// Indexed by key index; slot 0 unused.
    keys: [Option<KeyedMac>; 16],
}

/// A key with its HMAC already keyed: every packet clones the state instead of hashing the
/// padded secret again (two compression blocks of the four an 80-byte packet costs).
#[derive(Clone)]
enum KeyedMac {
    Sha1(HmacSha1),
    Md5(HmacMd5),
    Crc,
}

impl KeyedMac {
    fn new(key: &AuthKey) -> Self {
        match key.method {
            AuthMethod::Sha1 => KeyedMac::Sha1(keyed(&key.secret.0)),
            AuthMethod::Md5 => KeyedMac::Md5(keyed(&key.secret.0)),
            AuthMethod::Crc => KeyedMac::Crc,
        }
    }

    fn method(&self) -> AuthMethod {
        match self {
            KeyedMac::Sha1(_) => AuthMethod::Sha1,
            KeyedMac::Md5(_) => AuthMethod::Md5,
            KeyedMac::Crc => AuthMethod::Crc,
        }
    }
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("active", &self.active)
            .field("method", &self.active_method())
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    pub fn new(auth: &AuthKeys) -> Result<Self, KeyError> {
        let mut keys: [Option<KeyedMac>; 16] = Default::default();
        for (index, key) in &auth.keys {
            let slot = keys
                .get_mut(usize::from(*index))
                .filter(|_| *index != 0)
                .ok_or(KeyError::IndexOutOfRange(*index))?;
            *slot = Some(KeyedMac::new(key));
        }
        if keys
            .get(usize::from(auth.active))
            .and_then(Option::as_ref)
            .is_none()
        {
            return Err(KeyError::MissingActiveKey(auth.active));
        }
        Ok(Self {
            active: auth.active,
            keys,
        })
    }

    /// The index every outgoing packet carries.
    pub fn active_index(&self) -> u8 {
        self.active
    }

    pub fn active_method(&self) -> Option<AuthMethod> {
        self.key(self.active).map(KeyedMac::method)
    }

    fn key(&self, index: u8) -> Option<&KeyedMac> {
        self.keys.get(usize::from(index)).and_then(Option::as_ref)
    }

    /// Sets `key_index` and `mac` of `packet` with the active key.
    pub fn seal(&self, packet: &mut Heartbeat) {
        packet.key_index = self.active;
        packet.mac = [0; MAC_LEN];
        if let Some(key) = self.key(self.active) {
            packet.mac = compute_mac(key, packet);
        }
    }

    /// Checks the MAC of a received packet in constant time.
    pub fn verify(&self, packet: &Heartbeat) -> Result<(), AuthError> {
        let key = self
            .key(packet.key_index)
            .ok_or(AuthError::UnknownKey(packet.key_index))?;
        let mut unsigned = *packet;
        unsigned.mac = [0; MAC_LEN];
        let bytes = bytemuck::bytes_of(&unsigned);
        let (used, rest) = packet.mac.split_at(mac_len(key.method()));
        if rest.iter().any(|&b| b != 0) {
            return Err(AuthError::BadMac);
        }
        let ok = match key {
            KeyedMac::Sha1(mac) => mac.clone().chain_update(bytes).verify_slice(used).is_ok(),
            KeyedMac::Md5(mac) => mac.clone().chain_update(bytes).verify_slice(used).is_ok(),
            // CRC authenticates nothing; a plain compare is all it deserves.
            KeyedMac::Crc => crc32fast::hash(bytes).to_be_bytes() == used,
        };
        if ok {
            Ok(())
        } else {
            Err(AuthError::BadMac)
        }
    }
}

fn mac_len(method: AuthMethod) -> usize {
    match method {
        AuthMethod::Sha1 => 20,
        AuthMethod::Md5 => 16,
        AuthMethod::Crc => 4,
    }
}

fn keyed<M: Mac + hmac::digest::KeyInit>(secret: &[u8]) -> M {
    // HMAC accepts keys of any length, so this cannot fail.
    <M as hmac::digest::KeyInit>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"))
}

/// The MAC of `packet` (whose `mac` field must be zero) under `key`, zero-padded.
fn compute_mac(key: &KeyedMac, packet: &Heartbeat) -> [u8; MAC_LEN] {
    let bytes = bytemuck::bytes_of(packet);
    let mut out = [0; MAC_LEN];
    match key {
        KeyedMac::Sha1(mac) => {
            out.copy_from_slice(&mac.clone().chain_update(bytes).finalize().into_bytes())
        }
        KeyedMac::Md5(mac) => {
            out[..16].copy_from_slice(&mac.clone().chain_update(bytes).finalize().into_bytes())
        }
        KeyedMac::Crc => out[..4].copy_from_slice(&crc32fast::hash(bytes).to_be_bytes()),
    }
    out
}

/// Reads a UDP payload as a heartbeat and checks its shape, exactly as the XDP program
/// does (used by the socket receive path and by tests).
pub fn decode(payload: &[u8], cluster_id: u32) -> Result<Heartbeat, ShapeError> {
    if payload.len() != PACKET_LEN {
        return Err(ShapeError::BadLength);
    }
    let packet: Heartbeat = bytemuck::pod_read_unaligned(payload);
    packet.check_shape(cluster_id)?;
    Ok(packet)
}

/// The fields of a packet that the sender fills in; everything else is fixed per packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub cluster_id: u32,
    pub node_id: u32,
    pub generation: u64,
    pub keepalive_us: u32,
}

/// A packet ready to seal: the header plus this message's fields.
pub fn build(
    header: &Header,
    kind: MessageKind,
    state: NodeState,
    seq: u64,
    held: u64,
    arg: u64,
    dest_node: u32,
) -> Heartbeat {
    Heartbeat {
        magic: hb_common::wire::MAGIC,
        version: hb_common::wire::VERSION,
        kind: kind as u8,
        state: state as u8,
        key_index: 0,
        cluster_id: header.cluster_id.to_be_bytes(),
        node_id: header.node_id.to_be_bytes(),
        dest_node: dest_node.to_be_bytes(),
        keepalive_us: header.keepalive_us.to_be_bytes(),
        generation: header.generation.to_be_bytes(),
        seq: seq.to_be_bytes(),
        held: held.to_be_bytes(),
        arg: arg.to_be_bytes(),
        mac: [0; MAC_LEN],
        reserved: [0; 4],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    const CLUSTER: u32 = 0xC1C1_0001;

    fn keys(active: u8, entries: &[(u8, AuthMethod, &str)]) -> AuthKeys {
        AuthKeys {
            active,
            keys: entries
                .iter()
                .map(|(i, method, secret)| {
                    (
                        *i,
                        AuthKey {
                            method: *method,
                            secret: Secret(secret.as_bytes().to_vec()),
                        },
                    )
                })
                .collect(),
        }
    }

    fn sample() -> Heartbeat {
        let header = Header {
            cluster_id: CLUSTER,
            node_id: 7,
            generation: 3,
            keepalive_us: 5000,
        };
        build(
            &header,
            MessageKind::Heartbeat,
            NodeState::Active,
            42,
            0b101,
            0,
            0,
        )
    }

    fn sealed(auth: &Authenticator) -> Heartbeat {
        let mut packet = sample();
        auth.seal(&mut packet);
        packet
    }

    #[test]
    fn round_trip_through_bytes() {
        let auth = Authenticator::new(&keys(1, &[(1, AuthMethod::Sha1, "s3cret")])).unwrap();
        let packet = sealed(&auth);
        let bytes = bytemuck::bytes_of(&packet).to_vec();
        assert_eq!(bytes.len(), PACKET_LEN);
        let decoded = decode(&bytes, CLUSTER).unwrap();
        assert_eq!(decoded, packet);
        assert_eq!(decoded.node_id(), 7);
        assert_eq!(decoded.generation(), 3);
        assert_eq!(decoded.seq(), 42);
        assert_eq!(decoded.held(), 0b101);
        assert_eq!(decoded.keepalive_us(), 5000);
        assert_eq!(decoded.key_index, 1);
        auth.verify(&decoded).unwrap();
    }

    #[test]
    fn fields_are_big_endian_at_documented_offsets() {
        let bytes = bytemuck::bytes_of(&sample()).to_vec();
        assert_eq!(&bytes[0..4], b"HBHP");
        assert_eq!(bytes[4], hb_common::wire::VERSION);
        assert_eq!(bytes[5], MessageKind::Heartbeat as u8);
        assert_eq!(bytes[6], NodeState::Active as u8);
        assert_eq!(&bytes[8..12], &CLUSTER.to_be_bytes());
        assert_eq!(&bytes[12..16], &7u32.to_be_bytes());
        assert_eq!(&bytes[20..24], &5000u32.to_be_bytes());
        assert_eq!(&bytes[24..32], &3u64.to_be_bytes());
        assert_eq!(&bytes[32..40], &42u64.to_be_bytes());
        assert_eq!(&bytes[40..48], &5u64.to_be_bytes());
    }

    #[test]
    fn every_method_seals_and_verifies() {
        for method in [AuthMethod::Sha1, AuthMethod::Md5, AuthMethod::Crc] {
            let auth = Authenticator::new(&keys(2, &[(2, method, "k")])).unwrap();
            let packet = sealed(&auth);
            assert_eq!(auth.verify(&packet), Ok(()), "{method:?}");
            let used = mac_len(method);
            assert!(
                packet.mac[used..].iter().all(|&b| b == 0),
                "{method:?} pads with zeros"
            );
            assert!(
                packet.mac[..used].iter().any(|&b| b != 0),
                "{method:?} fills its MAC"
            );
        }
    }

    #[test]
    fn wrong_key_is_rejected() {
        let ours = Authenticator::new(&keys(1, &[(1, AuthMethod::Sha1, "right")])).unwrap();
        let theirs = Authenticator::new(&keys(1, &[(1, AuthMethod::Sha1, "wrong")])).unwrap();
        assert_eq!(ours.verify(&sealed(&theirs)), Err(AuthError::BadMac));
    }

    #[test]
    fn any_altered_byte_is_rejected() {
        for method in [AuthMethod::Sha1, AuthMethod::Md5] {
            let auth = Authenticator::new(&keys(1, &[(1, method, "k")])).unwrap();
            let packet = sealed(&auth);
            let bytes = bytemuck::bytes_of(&packet).to_vec();
            for i in 0..PACKET_LEN {
                if i == 7 {
                    continue; // key_index: covered by unknown_key_index_is_rejected
                }
                let mut altered = bytes.clone();
                altered[i] ^= 0x01;
                let forged: Heartbeat = bytemuck::pod_read_unaligned(&altered);
                assert_eq!(
                    auth.verify(&forged),
                    Err(AuthError::BadMac),
                    "{method:?} byte {i}"
                );
            }
        }
    }

    #[test]
    fn unknown_key_index_is_rejected() {
        let auth = Authenticator::new(&keys(1, &[(1, AuthMethod::Sha1, "k")])).unwrap();
        let mut packet = sealed(&auth);
        packet.key_index = 9;
        assert_eq!(auth.verify(&packet), Err(AuthError::UnknownKey(9)));
    }

    #[test]
    fn verifies_with_any_configured_key_during_rotation() {
        let old = Authenticator::new(&keys(1, &[(1, AuthMethod::Sha1, "old")])).unwrap();
        let rotating = Authenticator::new(&keys(
            2,
            &[(1, AuthMethod::Sha1, "old"), (2, AuthMethod::Sha1, "new")],
        ))
        .unwrap();
        assert_eq!(rotating.verify(&sealed(&old)), Ok(()));
        assert_eq!(sealed(&rotating).key_index, 2);
    }

    #[test]
    fn missing_active_key_and_bad_index_are_errors() {
        assert_eq!(
            Authenticator::new(&keys(3, &[(1, AuthMethod::Sha1, "k")])).unwrap_err(),
            KeyError::MissingActiveKey(3)
        );
        assert_eq!(
            Authenticator::new(&keys(
                1,
                &[(1, AuthMethod::Sha1, "k"), (16, AuthMethod::Md5, "x")]
            ))
            .unwrap_err(),
            KeyError::IndexOutOfRange(16)
        );
        assert_eq!(
            Authenticator::new(&keys(1, &[(0, AuthMethod::Sha1, "k")])).unwrap_err(),
            KeyError::IndexOutOfRange(0)
        );
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let auth =
            Authenticator::new(&keys(1, &[(1, AuthMethod::Sha1, "topsecretpassword")])).unwrap();
        let shown = format!(
            "{auth:?} {:?}",
            keys(1, &[(1, AuthMethod::Sha1, "topsecretpassword")])
        );
        assert!(!shown.contains("topsecret"), "{shown}");
    }

    fn with_byte(index: usize, value: u8) -> Vec<u8> {
        let mut bytes = bytemuck::bytes_of(&sample()).to_vec();
        bytes[index] = value;
        bytes
    }

    #[test]
    fn decode_rejects_every_malformed_shape() {
        let good = bytemuck::bytes_of(&sample()).to_vec();
        let mut valid_key = good.clone();
        valid_key[7] = 1;
        assert!(decode(&valid_key, CLUSTER).is_ok());

        let cases: Vec<(&str, Vec<u8>, ShapeError)> = vec![
            ("empty", vec![], ShapeError::BadLength),
            (
                "short by one",
                valid_key[..PACKET_LEN - 1].to_vec(),
                ShapeError::BadLength,
            ),
            (
                "long by one",
                [valid_key.clone(), vec![0]].concat(),
                ShapeError::BadLength,
            ),
            (
                "bad magic",
                {
                    let mut b = valid_key.clone();
                    b[0] = b'X';
                    b
                },
                ShapeError::BadMagic,
            ),
            (
                "bad version",
                {
                    let mut b = valid_key.clone();
                    b[4] = 2;
                    b
                },
                ShapeError::BadVersion,
            ),
            (
                "kind 0",
                {
                    let mut b = valid_key.clone();
                    b[5] = 0;
                    b
                },
                ShapeError::BadField,
            ),
            (
                "kind 6",
                {
                    let mut b = valid_key.clone();
                    b[5] = 6;
                    b
                },
                ShapeError::BadField,
            ),
            (
                "state 0",
                {
                    let mut b = valid_key.clone();
                    b[6] = 0;
                    b
                },
                ShapeError::BadField,
            ),
            (
                "state 5",
                {
                    let mut b = valid_key.clone();
                    b[6] = 5;
                    b
                },
                ShapeError::BadField,
            ),
            ("key index 0", with_byte(7, 0), ShapeError::BadField),
            (
                "key index 16",
                {
                    let mut b = valid_key.clone();
                    b[7] = 16;
                    b
                },
                ShapeError::BadField,
            ),
            (
                "reserved set",
                {
                    let mut b = valid_key.clone();
                    b[79] = 1;
                    b
                },
                ShapeError::BadField,
            ),
            (
                "other cluster",
                {
                    let mut b = valid_key.clone();
                    b[11] ^= 1;
                    b
                },
                ShapeError::WrongCluster,
            ),
        ];
        for (name, bytes, expected) in cases {
            assert_eq!(decode(&bytes, CLUSTER), Err(expected), "{name}");
        }
    }

    #[test]
    fn every_kind_and_state_decodes() {
        for kind in 1..=5u8 {
            for state in 1..=4u8 {
                let mut bytes = with_byte(5, kind);
                bytes[6] = state;
                bytes[7] = 1;
                let packet = decode(&bytes, CLUSTER).unwrap();
                assert_eq!(
                    MessageKind::from_u8(packet.kind).map(|k| k as u8),
                    Some(kind)
                );
                assert_eq!(
                    NodeState::from_u8(packet.state).map(|s| s as u8),
                    Some(state)
                );
            }
        }
    }
}
