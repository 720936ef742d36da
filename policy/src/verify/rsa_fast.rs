//! RSA signature verification (RSASSA-PKCS1-v1_5 and RSASSA-PSS, RFC 8017)
//! on crypto-bigint fixed-size integers.
//!
//! The rsa crate's public operation goes through num-bigint-dig's generic
//! modpow, which dominated verification time. A signature and the key are
//! public, so this uses a plain variable-time square-and-multiply with
//! Montgomery parameters computed once per key: 17 Montgomery products for
//! e = 65537 and no constant-time machinery.

use p256::elliptic_curve::bigint::modular::montgomery_reduction;
use p256::elliptic_curve::bigint::{Limb, U2048, U3072, U4096, Uint, Word};
use sha2::Digest;

use super::HashAlgorithm;

/// `DigestInfo` DER prefixes (RFC 8017 §9.2 note 1), hash parameters NULL as
/// the rsa crate and openssl write them.
const DIGEST_INFO_SHA256: &[u8] = &[
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];
const DIGEST_INFO_SHA384: &[u8] = &[
    0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05,
    0x00, 0x04, 0x30,
];
const DIGEST_INFO_SHA512: &[u8] = &[
    0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03, 0x05,
    0x00, 0x04, 0x40,
];

/// An RSA public key whose modulus is exactly 2048, 3072 or 4096 bits.
#[derive(Clone)]
pub(super) struct RsaKey {
    modulus: Modulus,
    exponent: u64,
}

// Boxed: a 4096-bit modulus with its Montgomery constants is over 1 KiB and
// would otherwise make every PkixKey that large.
#[derive(Clone)]
enum Modulus {
    B2048(Box<Montgomery<{ U2048::LIMBS }>>),
    B3072(Box<Montgomery<{ U3072::LIMBS }>>),
    B4096(Box<Montgomery<{ U4096::LIMBS }>>),
}

impl RsaKey {
    /// `n` and `e` big-endian, as in the PKCS#1 `RSAPublicKey`. `None` unless
    /// n is odd and exactly 2048, 3072 or 4096 bits and 0 < e < 2^64; the
    /// caller has already applied the rsa crate's stricter key checks.
    pub(super) fn new(n: &[u8], e: &[u8]) -> Option<RsaKey> {
        let modulus = match significant(n).len() * 8 {
            2048 => Modulus::B2048(Box::new(Montgomery::new(n)?)),
            3072 => Modulus::B3072(Box::new(Montgomery::new(n)?)),
            4096 => Modulus::B4096(Box::new(Montgomery::new(n)?)),
            _ => return None,
        };
        let e = significant(e);
        if e.is_empty() || e.len() > 8 {
            return None;
        }
        let exponent = e.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        Some(RsaKey { modulus, exponent })
    }

    /// The modulus length in bytes, which every signature must have.
    fn len(&self) -> usize {
        match &self.modulus {
            Modulus::B2048(_) => U2048::BYTES,
            Modulus::B3072(_) => U3072::BYTES,
            Modulus::B4096(_) => U4096::BYTES,
        }
    }

    /// RSAVP1 with I2OSP to the modulus length: `s^e mod n` as big-endian
    /// bytes, or `None` when the signature is not exactly as long as the
    /// modulus or its integer is not below n (RFC 8017 §5.2.2, §8.2.2 step 1).
    fn encoded_message(&self, signature: &[u8]) -> Option<Vec<u8>> {
        match &self.modulus {
            Modulus::B2048(m) => m.public_op(signature, self.exponent),
            Modulus::B3072(m) => m.public_op(signature, self.exponent),
            Modulus::B4096(m) => m.public_op(signature, self.exponent),
        }
    }

    /// RSASSA-PKCS1-v1_5-VERIFY (RFC 8017 §8.2.2).
    pub(super) fn verify_pkcs1v15(
        &self,
        hash: HashAlgorithm,
        payload: &[u8],
        signature: &[u8],
    ) -> bool {
        let Some(em) = self.encoded_message(signature) else {
            return false;
        };
        let (prefix, digest) = match hash {
            HashAlgorithm::Sha256 => (DIGEST_INFO_SHA256, sha2::Sha256::digest(payload).to_vec()),
            HashAlgorithm::Sha384 => (DIGEST_INFO_SHA384, sha2::Sha384::digest(payload).to_vec()),
            HashAlgorithm::Sha512 => (DIGEST_INFO_SHA512, sha2::Sha512::digest(payload).to_vec()),
        };
        // EMSA-PKCS1-v1_5 is deterministic, so comparing against the one valid
        // encoding rejects every malleation (trailing data, other DigestInfo
        // forms, short padding) without parsing anything.
        let t_len = prefix.len() + digest.len();
        let Some(ps_len) = em.len().checked_sub(t_len + 3) else {
            return false;
        };
        if ps_len < 8 {
            return false;
        }
        let mut expected = Vec::with_capacity(em.len());
        expected.extend_from_slice(&[0x00, 0x01]);
        expected.resize(2 + ps_len, 0xff);
        expected.push(0x00);
        expected.extend_from_slice(prefix);
        expected.extend_from_slice(&digest);
        em == expected
    }

    /// RSASSA-PSS-VERIFY (RFC 8017 §8.1.2) with MGF1 over the same hash and
    /// a salt exactly as long as the digest, the only form GCP and KMS use.
    pub(super) fn verify_pss(&self, hash: HashAlgorithm, payload: &[u8], signature: &[u8]) -> bool {
        let Some(em) = self.encoded_message(signature) else {
            return false;
        };
        let mod_bits = self.len() * 8;
        match hash {
            HashAlgorithm::Sha256 => emsa_pss_verify::<sha2::Sha256>(payload, em, mod_bits),
            HashAlgorithm::Sha384 => emsa_pss_verify::<sha2::Sha384>(payload, em, mod_bits),
            HashAlgorithm::Sha512 => emsa_pss_verify::<sha2::Sha512>(payload, em, mod_bits),
        }
    }
}

/// EMSA-PSS-VERIFY (RFC 8017 §9.1.2) with sLen = hLen. `em_k` is the
/// message representative as `k` bytes, k the modulus length.
fn emsa_pss_verify<D: Digest>(payload: &[u8], mut em_k: Vec<u8>, mod_bits: usize) -> bool {
    let h_len = <D as Digest>::output_size();
    let s_len = h_len;
    let Some(em_bits) = mod_bits.checked_sub(1) else {
        return false;
    };
    let em_len = em_bits.div_ceil(8);
    // §8.1.2 step 2c: I2OSP(m, emLen) fails when m needs more than emLen
    // bytes, which can only happen when modBits - 1 is a multiple of 8.
    let Some(excess) = em_k.len().checked_sub(em_len) else {
        return false;
    };
    let Some((above, em)) = em_k.split_at_mut_checked(excess) else {
        return false;
    };
    if above.iter().any(|b| *b != 0) {
        return false;
    }
    // Step 3.
    if em_len < h_len + s_len + 2 {
        return false;
    }
    // Step 4.
    let Some((&mut trailer, rest)) = em.split_last_mut() else {
        return false;
    };
    if trailer != 0xbc {
        return false;
    }
    // Step 5.
    let Some((masked_db, h)) = rest.split_at_mut_checked(em_len - h_len - 1) else {
        return false;
    };
    // Step 6: the bits above emBits must be zero before unmasking.
    let top_bits = 8 * em_len - em_bits;
    let top_mask = 0xffu8.checked_shr(top_bits as u32).unwrap_or(0);
    let Some(first) = masked_db.first_mut() else {
        return false;
    };
    if *first & !top_mask != 0 {
        return false;
    }
    // Steps 7-9.
    mgf1_xor::<D>(masked_db, h);
    let db = masked_db;
    if let Some(first) = db.first_mut() {
        *first &= top_mask;
    }
    // Step 10: PS zeros, then 0x01, then the salt.
    let Some((ps, rest)) = db.split_at_checked(em_len - h_len - s_len - 2) else {
        return false;
    };
    let Some((&separator, salt)) = rest.split_first() else {
        return false;
    };
    if ps.iter().any(|b| *b != 0) || separator != 0x01 || salt.len() != s_len {
        return false;
    }
    // Steps 12-14.
    let m_hash = D::digest(payload);
    let mut m_prime = D::new();
    m_prime.update([0u8; 8]);
    m_prime.update(&m_hash);
    m_prime.update(salt);
    m_prime.finalize().as_slice() == &*h
}

/// XORs MGF1(seed, out.len()) into `out` (RFC 8017 §B.2.1).
fn mgf1_xor<D: Digest>(out: &mut [u8], seed: &[u8]) {
    for (counter, chunk) in (0u32..).zip(out.chunks_mut(<D as Digest>::output_size())) {
        let mut hash = D::new();
        hash.update(seed);
        hash.update(counter.to_be_bytes());
        for (o, m) in chunk.iter_mut().zip(hash.finalize()) {
            *o ^= m;
        }
    }
}

/// An odd modulus of exactly `LIMBS` limbs (top bit set) with the constants
/// for Montgomery multiplication by R = 2^(LIMBS·Limb::BITS).
#[derive(Clone)]
struct Montgomery<const LIMBS: usize> {
    n: Uint<LIMBS>,
    /// -n⁻¹ mod 2^Limb::BITS.
    n_neg_inv: Limb,
    /// R² mod n, to bring an integer into Montgomery form with one product.
    r2: Uint<LIMBS>,
}

impl<const LIMBS: usize> Montgomery<LIMBS> {
    fn new(n_be: &[u8]) -> Option<Self> {
        let n = uint_from_be::<LIMBS>(n_be)?;
        if n.bits() != Uint::<LIMBS>::BITS {
            return None;
        }
        let n0 = n.as_words().first().copied()?;
        if n0 & 1 == 0 {
            return None;
        }
        // Newton's iteration for n0⁻¹ mod 2^w doubles the correct low bits
        // each round; an odd n0 is its own inverse mod 8 (3 bits), so six
        // rounds cover 192 bits, enough for 32- and 64-bit words.
        let mut inv: Word = n0;
        for _ in 0..6 {
            inv = inv.wrapping_mul((2 as Word).wrapping_sub(n0.wrapping_mul(inv)));
        }
        let mut m = Montgomery {
            n,
            n_neg_inv: Limb(inv.wrapping_neg()),
            r2: Uint::ZERO,
        };
        // With the top bit of n set, R mod n = R - n, which is n's two's
        // complement. Doubling it j times gives R·2^j; each Montgomery
        // squaring then doubles the exponent of 2 (x² / R), so with
        // BITS = j·2^t, t squarings reach R·2^BITS = R² mod n. That is a few
        // dozen products instead of a 2·BITS-bit division.
        let bits = Uint::<LIMBS>::BITS;
        let t = bits.trailing_zeros();
        let j = bits >> t;
        let mut x = n.wrapping_neg();
        for _ in 0..j {
            x = x.add_mod(&x, &n);
        }
        for _ in 0..t {
            x = m.square(&x);
        }
        m.r2 = x;
        Some(m)
    }

    /// a·b/R mod n for a, b < n.
    fn mul(&self, a: &Uint<LIMBS>, b: &Uint<LIMBS>) -> Uint<LIMBS> {
        montgomery_reduction(&a.mul_wide(b), &self.n, self.n_neg_inv)
    }

    fn square(&self, a: &Uint<LIMBS>) -> Uint<LIMBS> {
        montgomery_reduction(&a.square_wide(), &self.n, self.n_neg_inv)
    }

    /// `s^e mod n` as LIMBS·Limb::BYTES big-endian bytes, or `None` if the
    /// signature has another length or s ≥ n.
    fn public_op(&self, signature: &[u8], e: u64) -> Option<Vec<u8>> {
        if signature.len() != Uint::<LIMBS>::BYTES {
            return None;
        }
        let s = uint_from_be::<LIMBS>(signature)?;
        if s >= self.n {
            return None;
        }
        let base = self.mul(&s, &self.r2);
        // Left-to-right binary exponentiation; e is public, so branching on
        // its bits leaks nothing.
        let mut acc = base;
        let e_bits = u64::BITS - e.leading_zeros();
        if e_bits == 0 {
            acc = self.mul(&Uint::ONE, &self.r2);
        }
        for i in (0..e_bits.saturating_sub(1)).rev() {
            acc = self.square(&acc);
            if (e >> i) & 1 == 1 {
                acc = self.mul(&acc, &base);
            }
        }
        let m = montgomery_reduction(&(acc, Uint::ZERO), &self.n, self.n_neg_inv);
        Some(
            m.as_words()
                .iter()
                .rev()
                .flat_map(|w| w.to_be_bytes())
                .collect(),
        )
    }
}

/// Big-endian bytes without their leading zero bytes.
fn significant(be: &[u8]) -> &[u8] {
    let start = be.iter().position(|b| *b != 0).unwrap_or(be.len());
    &be[start..]
}

/// A big-endian integer of at most LIMBS limbs (leading zero bytes allowed).
fn uint_from_be<const LIMBS: usize>(be: &[u8]) -> Option<Uint<LIMBS>> {
    let be = significant(be);
    if be.len() > Uint::<LIMBS>::BYTES {
        return None;
    }
    let mut words = [0 as Word; LIMBS];
    for (i, byte) in be.iter().rev().enumerate() {
        let word = words.get_mut(i / Limb::BYTES)?;
        *word |= Word::from(*byte) << (8 * (i % Limb::BYTES));
    }
    Some(Uint::from_words(words))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_info_prefixes_name_the_hash_oids() {
        use sha2::digest::const_oid::AssociatedOid;
        fn prefix<D: Digest + AssociatedOid>() -> Vec<u8> {
            let oid = D::OID;
            let oid = oid.as_bytes();
            let (o, d) = (oid.len() as u8, <D as Digest>::output_size() as u8);
            [
                &[0x30, o + 8 + d, 0x30, o + 4, 0x06, o][..],
                oid,
                &[0x05, 0x00, 0x04, d],
            ]
            .concat()
        }
        assert_eq!(DIGEST_INFO_SHA256, prefix::<sha2::Sha256>());
        assert_eq!(DIGEST_INFO_SHA384, prefix::<sha2::Sha384>());
        assert_eq!(DIGEST_INFO_SHA512, prefix::<sha2::Sha512>());
    }

    #[test]
    fn r2_matches_the_definition() {
        // n = 2^2048 - 159 is odd with the top bit set; R² mod n = 159² as
        // R ≡ 159 (mod n).
        let mut n = vec![0xffu8; 256];
        n[255] = 0x61;
        let m = Montgomery::<{ U2048::LIMBS }>::new(&n).unwrap();
        let mut expected = [0u8; 256];
        expected[254..].copy_from_slice(&(159u16 * 159).to_be_bytes());
        assert_eq!(m.r2, uint_from_be(&expected).unwrap());
    }

    #[test]
    fn key_must_be_an_odd_modulus_of_a_supported_size() {
        let mut n = vec![0xffu8; 256];
        assert!(RsaKey::new(&n, &[1, 0, 1]).is_some());
        assert!(RsaKey::new(&[&[0, 0][..], &n].concat(), &[1, 0, 1]).is_some());
        n[255] = 0xfe;
        assert!(RsaKey::new(&n, &[1, 0, 1]).is_none(), "even");
        assert!(RsaKey::new(&[0xff; 255], &[1, 0, 1]).is_none(), "2040 bits");
        assert!(RsaKey::new(&[0x7f; 256], &[1, 0, 1]).is_none(), "2047 bits");
        assert!(RsaKey::new(&[0xff; 256], &[]).is_none(), "e = 0");
        assert!(RsaKey::new(&[0xff; 256], &[1; 9]).is_none(), "e ≥ 2^64");
        assert!(RsaKey::new(&[], &[3]).is_none());
    }

    #[test]
    fn public_op_is_modular_exponentiation() {
        // n = 2^2048 - 159, s = 2: s^e mod n for small e is 2^e itself, and
        // for e = 2049 it wraps to 2·159.
        let mut n = vec![0xffu8; 256];
        n[255] = 0x61;
        let m = Montgomery::<{ U2048::LIMBS }>::new(&n).unwrap();
        let mut two = [0u8; 256];
        two[255] = 2;
        let as_u64 = |v: Vec<u8>| {
            assert!(v[..248].iter().all(|b| *b == 0));
            u64::from_be_bytes(v[248..].try_into().unwrap())
        };
        for e in [0u64, 1, 2, 3, 17, 63] {
            assert_eq!(as_u64(m.public_op(&two, e).unwrap()), 1 << e, "e = {e}");
        }
        assert_eq!(as_u64(m.public_op(&two, 2049).unwrap()), 2 * 159);
        assert!(m.public_op(&two[1..], 3).is_none(), "short");
        assert!(m.public_op(&n, 3).is_none(), "s = n");
        assert!(m.public_op(&[0xff; 256], 3).is_none(), "s > n");
    }
}
