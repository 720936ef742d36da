//! ECDSA verification with precomputed comb tables.
//!
//! ecdsa 0.16 computes u1·G + u2·Q with primeorder's constant-time
//! LinearCombination: two full scalar multiplications, about 256 doublings
//! each on P-256. Verification only touches public data, so here both
//! products are read off fixed-base comb tables, one per curve for G and one
//! per key for Q: R is then a sum of about one table point per window and
//! needs no doublings at all.
//!
//! Tables are built lazily: G's on the first verification on its curve, a
//! key's on its first verification, so loading a bundle with many keys costs
//! nothing extra. A process that verifies a handful of signatures and exits
//! (the containerd shim, once per container) never earns back the cost of
//! building them; it calls [`verify_without_tables`] and gets the plain
//! linear combination instead.
//!
//! The tables hold projective points. Normalising them to affine would make
//! each addition a little cheaper, but the curve crates do not expose field
//! elements, so there is no batch inversion to do it with, and one inversion
//! per table point would cost far more than it saves.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use p256::elliptic_curve::ops::LinearCombination;

use p256::elliptic_curve::Field as _;
use p256::elliptic_curve::bigint::ArrayEncoding as _;
use p256::elliptic_curve::ff::PrimeField;
use p256::elliptic_curve::generic_array::typenum::Unsigned;
use p256::elliptic_curve::group::{Curve as _, Group};
use p256::elliptic_curve::ops::Reduce;
use p256::elliptic_curve::point::AffineCoordinates;
use p256::elliptic_curve::{
    CurveArithmetic, FieldBytes, FieldBytesSize, NonZeroScalar, PrimeCurve,
};

static WITHOUT_TABLES: AtomicBool = AtomicBool::new(false);
static TABLES_BUILT: AtomicBool = AtomicBool::new(false);

/// Whether this process has built any comb table: lets a test tell that
/// [`verify_without_tables`] took effect.
#[doc(hidden)]
pub fn comb_tables_built() -> bool {
    TABLES_BUILT.load(Ordering::Relaxed)
}

/// From now on, in this process, ECDSA verifications compute u1·G + u2·Q
/// directly instead of building comb tables: slower per signature, but with
/// nothing to build, so faster for a process that verifies a few and exits.
pub fn verify_without_tables() {
    WITHOUT_TABLES.store(true, Ordering::Relaxed);
}

/// A curve with its process-wide generator table and the window widths.
pub(super) trait CombCurve: PrimeCurve + CurveArithmetic {
    /// The comb for G, built on first use.
    fn generator_comb() -> &'static Comb<Self>;

    /// Window width of per-key tables; each window holds 2^(width-1) points.
    const KEY_WIDTH: usize;
}

macro_rules! comb_curve {
    ($curve:ty, generator_width = $g:expr, key_width = $k:expr) => {
        impl CombCurve for $curve {
            fn generator_comb() -> &'static Comb<Self> {
                static TABLE: OnceLock<Comb<$curve>> = OnceLock::new();
                TABLE.get_or_init(|| Comb::new(Group::generator(), $g))
            }

            const KEY_WIDTH: usize = $k;
        }
    };
}

// Widths trade table memory and build time against additions per verify
// (about ⌈bits/width⌉ per scalar). G's table exists once per process, so it
// can be wider than the per-key ones. Per key: P-256 81 KB, P-384 180 KB,
// P-521 228 KB, built in about 0.3, 1.3 and 1.4 ms on first use; G:
// 233, 300 and 366 KB (the `comb_sizes` test prints them).
comb_curve!(p256::NistP256, generator_width = 7, key_width = 5);
comb_curve!(p384::NistP384, generator_width = 6, key_width = 5);
comb_curve!(p521::NistP521, generator_width = 5, key_width = 4);

/// Multiples d·2^(width·i)·P for every window i and 1 ≤ d ≤ 2^(width-1),
/// enough to add k·P for any scalar k with signed digits.
pub(super) struct Comb<C: CurveArithmetic> {
    width: usize,
    /// Window i occupies `points[i·half .. (i+1)·half]`, entry d-1 is d·2^(width·i)·P.
    points: Vec<C::ProjectivePoint>,
}

impl<C: CurveArithmetic> Comb<C> {
    /// `width` is between 1 and 8 (a window must fit in two bytes of the scalar).
    fn new(base: C::ProjectivePoint, width: usize) -> Self {
        TABLES_BUILT.store(true, Ordering::Relaxed);
        let width = width.clamp(1, 8);
        let half = 1usize << (width - 1);
        // Signed digits carry into one window above the scalar's own bits.
        let windows = (C::Scalar::NUM_BITS as usize).div_ceil(width) + 1;
        let mut points = Vec::with_capacity(windows * half);
        let mut window_base = base;
        for _ in 0..windows {
            let start = points.len();
            points.push(window_base);
            for d in 2..=half {
                // Even multiples by doubling, which is cheaper than adding.
                let next = if d % 2 == 0 {
                    points.get(start + d / 2 - 1).map(|p| p.double())
                } else {
                    points.get(start + d - 2).map(|p| *p + window_base)
                };
                points.push(next.unwrap_or(window_base));
            }
            // half·2^(width·i)·P doubled is the next window's base.
            window_base = points.last().map_or(window_base, |p| p.double());
        }
        Comb { width, points }
    }

    /// acc + k·P. Each window's `width` bits become a digit in
    /// [-(half-1), half] by borrowing from the window above, so only
    /// positive multiples need storing: negating a point is free.
    fn add_multiple(&self, acc: &mut C::ProjectivePoint, k: &C::Scalar) {
        let bytes: FieldBytes<C> = (*k).into();
        let half = 1usize << (self.width - 1);
        let full = half << 1;
        let mut carry = 0;
        for (i, window) in self.points.chunks_exact(half).enumerate() {
            let t = window_bits(&bytes, i * self.width, self.width) + carry;
            let (magnitude, negative) = if t > half {
                carry = 1;
                (full - t, true)
            } else {
                carry = 0;
                (t, false)
            };
            // A zero digit adds nothing and has no table entry.
            if let Some(p) = magnitude.checked_sub(1).and_then(|j| window.get(j)) {
                if negative {
                    *acc -= p;
                } else {
                    *acc += p;
                }
            }
        }
    }

    /// Heap memory held by the table.
    #[cfg(test)]
    fn size_bytes(&self) -> usize {
        self.points.len() * size_of::<C::ProjectivePoint>()
    }
}

/// Bits `pos .. pos + width` (bit 0 the least significant, width ≤ 8) of a
/// big-endian integer, zero beyond its length.
fn window_bits(be: &[u8], pos: usize, width: usize) -> usize {
    let byte = |i: usize| {
        be.len()
            .checked_sub(i + 1)
            .and_then(|j| be.get(j))
            .map_or(0, |b| usize::from(*b))
    };
    let two = byte(pos / 8) | (byte(pos / 8 + 1) << 8);
    (two >> (pos % 8)) & ((1 << width) - 1)
}

/// An ECDSA public key Q with its comb, built on the first verification and
/// shared by all clones of the key.
pub(super) struct EcdsaKey<C: CombCurve> {
    q: C::ProjectivePoint,
    comb: Arc<OnceLock<Comb<C>>>,
}

impl<C: CombCurve> Clone for EcdsaKey<C> {
    fn clone(&self) -> Self {
        EcdsaKey {
            q: self.q,
            comb: Arc::clone(&self.comb),
        }
    }
}

impl<C: CombCurve> EcdsaKey<C> {
    /// `q` must not be the identity; the curve crates' key parsing ensures it.
    pub(super) fn new(q: &C::AffinePoint) -> Self {
        EcdsaKey {
            q: C::ProjectivePoint::from(*q),
            comb: Arc::new(OnceLock::new()),
        }
    }

    fn comb(&self) -> &Comb<C> {
        self.comb.get_or_init(|| Comb::new(self.q, C::KEY_WIDTH))
    }

    /// ECDSA verification (SEC 1 §4.1.4) of `prehash`, the message digest,
    /// with r and s already known to be in [1, n-1]; the same steps as
    /// `ecdsa::hazmat::verify_prehashed`.
    pub(super) fn verify(
        &self,
        prehash: &[u8],
        r: &NonZeroScalar<C>,
        s: &NonZeroScalar<C>,
    ) -> bool {
        let Some(field) = bits2field::<C>(prehash) else {
            return false;
        };
        let z = <C::Scalar as Reduce<C::Uint>>::reduce_bytes(&field);
        let Some(s_inv) = invert_vartime::<C>(s) else {
            return false;
        };
        let u1 = z * s_inv;
        let u2 = **r * s_inv;
        let point = if WITHOUT_TABLES.load(Ordering::Relaxed) {
            C::ProjectivePoint::lincomb(&C::ProjectivePoint::generator(), &u1, &self.q, &u2)
        } else {
            let mut point = C::ProjectivePoint::identity();
            C::generator_comb().add_multiple(&mut point, &u1);
            self.comb().add_multiple(&mut point, &u2);
            point
        };
        // The identity maps to x = 0, which never equals a nonzero r.
        let x = point.to_affine().x();
        **r == <C::Scalar as Reduce<C::Uint>>::reduce_bytes(&x)
    }
}

/// s⁻¹ mod n by the binary extended Euclidean algorithm.
///
/// p384 and p521 only offer a constant-time inversion (Bernstein–Yang
/// divsteps), 50 µs and 115 µs, as much as a quarter of a verification; s is
/// public. The arithmetic is on plain 64-bit limbs: through crypto-bigint's
/// generic traits, every step is constant-time and the loop was slower than
/// the divsteps. The result is checked by multiplying back, so a flaw here
/// could only reject a signature, never accept one.
fn invert_vartime<C: CurveArithmetic>(s: &NonZeroScalar<C>) -> Option<C::Scalar> {
    let n = Limbs::from_be(&C::ORDER.to_be_byte_array())?;
    let len = n.len;
    // Invariants: x1·s ≡ u and x2·s ≡ v (mod n); u, v > 0 while gcd(u, v) = 1.
    let mut u = Limbs::from_be(&Into::<FieldBytes<C>>::into(**s))?;
    u.len = len;
    let mut v = n;
    let mut x1 = Limbs::one(len);
    let mut x2 = Limbs::zero(len);
    let n_inv = n.inverse_mod_2_64();
    // Each round removes at least one bit from u or v, so 2·bits rounds
    // always suffice; the bound only guarantees termination on bad input.
    for _ in 0..2 * 64 * len + 2 {
        if u.is_zero() || v.is_zero() {
            return None;
        }
        while u.is_even() {
            let shift = u.limbs[0].trailing_zeros().min(63);
            u.shr(shift, 0);
            x1.div_pow2_mod(shift, &n, n_inv);
        }
        while v.is_even() {
            let shift = v.limbs[0].trailing_zeros().min(63);
            v.shr(shift, 0);
            x2.div_pow2_mod(shift, &n, n_inv);
        }
        let inverse = if u.is_one() {
            x1
        } else if v.is_one() {
            x2
        } else {
            if u.ge(&v) {
                u.sub_assign(&v);
                x1.sub_mod(&x2, &n);
            } else {
                v.sub_assign(&u);
                x2.sub_mod(&x1, &n);
            }
            continue;
        };
        let mut repr = FieldBytes::<C>::default();
        inverse.write_be(&mut repr)?;
        let inverse = Option::<C::Scalar>::from(C::Scalar::from_repr(repr))?;
        return (inverse * **s == C::Scalar::ONE).then_some(inverse);
    }
    None
}

/// Little-endian 64-bit limbs of an integer below 2^576, the widest scalar
/// here (P-521), of which the low `len` are in use.
#[derive(Clone, Copy)]
struct Limbs {
    limbs: [u64; 9],
    len: usize,
}

impl Limbs {
    fn zero(len: usize) -> Self {
        Limbs {
            limbs: [0; 9],
            len: len.min(9),
        }
    }

    fn one(len: usize) -> Self {
        let mut x = Limbs::zero(len);
        x.limbs[0] = 1;
        x
    }

    /// `len` is the number of limbs up to the most significant nonzero one.
    fn from_be(be: &[u8]) -> Option<Self> {
        let mut x = Limbs::zero(9);
        let mut chunks = be.rchunks(8);
        for limb in x.limbs.iter_mut() {
            if let Some(chunk) = chunks.next() {
                *limb = chunk.iter().fold(0, |acc, b| (acc << 8) | u64::from(*b));
            }
        }
        if chunks
            .next()
            .is_some_and(|rest| rest.iter().any(|b| *b != 0))
        {
            return None;
        }
        x.len = x.limbs.iter().rposition(|l| *l != 0).map_or(1, |i| i + 1);
        Some(x)
    }

    /// Writes the value big-endian into `out`; `None` if it does not fit.
    fn write_be(&self, out: &mut [u8]) -> Option<()> {
        let mut bytes = self.limbs.iter().flat_map(|l| l.to_le_bytes());
        for b in out.iter_mut().rev() {
            *b = bytes.next().unwrap_or(0);
        }
        bytes.all(|b| b == 0).then_some(())
    }

    fn used(&self) -> impl DoubleEndedIterator<Item = &u64> {
        self.limbs.iter().take(self.len)
    }

    fn is_zero(&self) -> bool {
        self.used().all(|l| *l == 0)
    }

    fn is_one(&self) -> bool {
        self.limbs[0] == 1 && self.used().skip(1).all(|l| *l == 0)
    }

    fn is_even(&self) -> bool {
        self.limbs[0] & 1 == 0
    }

    fn ge(&self, other: &Self) -> bool {
        for (a, b) in self.used().rev().zip(other.used().rev()) {
            if a != b {
                return a > b;
            }
        }
        true
    }

    /// self >>= shift (1 ≤ shift ≤ 63), `top` supplying the bits shifted in
    /// at the top, as if it were one more limb.
    fn shr(&mut self, shift: u32, top: u64) {
        let shift = shift.clamp(1, 63);
        let mut above = top;
        for l in self.limbs.iter_mut().take(self.len).rev() {
            let low = *l;
            *l = (low >> shift) | (above << (64 - shift));
            above = low;
        }
    }

    /// n⁻¹ mod 2^64 for odd n: Newton's iteration doubles the correct low
    /// bits each round, starting from 3 (an odd number is its own inverse
    /// mod 8).
    fn inverse_mod_2_64(&self) -> u64 {
        let n0 = self.limbs[0];
        let mut inv = n0;
        for _ in 0..5 {
            inv = inv.wrapping_mul(2u64.wrapping_sub(n0.wrapping_mul(inv)));
        }
        inv
    }

    /// self -= other, returning the borrow.
    fn sub_assign(&mut self, other: &Self) -> bool {
        let mut borrow = false;
        for (a, b) in self.limbs.iter_mut().zip(other.limbs).take(self.len) {
            let (d, b1) = a.overflowing_sub(b);
            let (d, b2) = d.overflowing_sub(u64::from(borrow));
            *a = d;
            borrow = b1 || b2;
        }
        borrow
    }

    /// self += other, returning the carry.
    fn add_assign(&mut self, other: &Self) -> bool {
        let mut carry = false;
        for (a, b) in self.limbs.iter_mut().zip(other.limbs).take(self.len) {
            let (d, c1) = a.overflowing_add(b);
            let (d, c2) = d.overflowing_add(u64::from(carry));
            *a = d;
            carry = c1 || c2;
        }
        carry
    }

    /// self = self - other mod n, for self, other < n.
    fn sub_mod(&mut self, other: &Self, n: &Self) {
        if self.sub_assign(other) {
            self.add_assign(n);
        }
    }

    /// self = self / 2^shift mod n, for self < n, n odd, 1 ≤ shift ≤ 63:
    /// adding m·n with m = -self·n⁻¹ mod 2^shift clears the low bits, and
    /// (self + m·n) / 2^shift < n.
    fn div_pow2_mod(&mut self, shift: u32, n: &Self, n_inv: u64) {
        let shift = shift.clamp(1, 63);
        let m = self.limbs[0].wrapping_mul(n_inv).wrapping_neg() & ((1u64 << shift) - 1);
        let mut carry = 0u64;
        for (a, b) in self.limbs.iter_mut().zip(n.limbs).take(self.len) {
            let t = u128::from(*a) + u128::from(b) * u128::from(m) + u128::from(carry);
            *a = t as u64;
            carry = (t >> 64) as u64;
        }
        self.shr(shift, carry);
    }
}

/// The digest as a field-sized big-endian integer, as ecdsa 0.16's
/// `bits2field` makes it: left-padded when shorter (SHA-512 on P-521),
/// truncated to the leftmost bytes when longer, refused when shorter than
/// half the field.
fn bits2field<C: CurveArithmetic>(prehash: &[u8]) -> Option<FieldBytes<C>> {
    let size = FieldBytesSize::<C>::USIZE;
    if prehash.len() < size / 2 {
        return None;
    }
    let mut field = FieldBytes::<C>::default();
    if prehash.len() >= size {
        field.copy_from_slice(prehash.get(..size)?);
    } else {
        field
            .get_mut(size - prehash.len()..)?
            .copy_from_slice(prehash);
    }
    Some(field)
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::elliptic_curve::ops::Invert;

    fn check_add_multiple<C: CombCurve>() {
        let rng = &mut rand::thread_rng();
        let p = C::ProjectivePoint::random(&mut *rng);
        for width in 1..=8 {
            let comb = Comb::<C>::new(p, width);
            let minus_one = -C::Scalar::ONE;
            let mut scalars = vec![C::Scalar::ZERO, C::Scalar::ONE, minus_one];
            scalars.extend((0..4).map(|_| C::Scalar::random(&mut *rng)));
            for k in scalars {
                let mut acc = C::ProjectivePoint::identity();
                comb.add_multiple(&mut acc, &k);
                assert_eq!(acc, p * k, "width {width}");
            }
        }
    }

    #[test]
    fn comb_computes_scalar_multiples_on_every_curve_and_width() {
        check_add_multiple::<p256::NistP256>();
        check_add_multiple::<p384::NistP384>();
        check_add_multiple::<p521::NistP521>();
    }

    fn check_invert_vartime<C: CombCurve>() {
        let rng = &mut rand::thread_rng();
        let mut scalars = vec![C::Scalar::ONE, -C::Scalar::ONE, C::Scalar::ONE.double()];
        scalars.extend((0..50).map(|_| C::Scalar::random(&mut *rng)));
        for k in scalars {
            let expected = Option::<C::Scalar>::from(Invert::invert(&k)).unwrap();
            let k = NonZeroScalar::<C>::new(k).unwrap();
            assert_eq!(invert_vartime::<C>(&k), Some(expected));
        }
    }

    #[test]
    fn invert_vartime_agrees_with_the_constant_time_inversion() {
        check_invert_vartime::<p256::NistP256>();
        check_invert_vartime::<p384::NistP384>();
        check_invert_vartime::<p521::NistP521>();
    }

    #[test]
    fn window_bits_reads_across_bytes_and_past_the_end() {
        let be = [0xab, 0xcd];
        assert_eq!(window_bits(&be, 0, 4), 0xd);
        assert_eq!(window_bits(&be, 4, 8), 0xbc);
        assert_eq!(window_bits(&be, 12, 8), 0xa);
        assert_eq!(window_bits(&be, 16, 8), 0);
        assert_eq!(window_bits(&be, 1000, 8), 0);
    }

    #[test]
    fn bits2field_pads_truncates_and_refuses_like_ecdsa() {
        let padded = bits2field::<p521::NistP521>(&[0xff; 64]).unwrap();
        assert_eq!(&padded[..2], &[0, 0]);
        assert_eq!(&padded[2..], &[0xff; 64]);
        let truncated = bits2field::<p256::NistP256>(&(0..64).collect::<Vec<u8>>()).unwrap();
        assert_eq!(truncated.as_slice(), &(0..32).collect::<Vec<u8>>()[..]);
        assert!(bits2field::<p256::NistP256>(&[1; 15]).is_none());
    }

    #[test]
    fn comb_sizes() {
        // Printed with --nocapture for the record; asserted loosely so that a
        // width change that blows the per-key budget is noticed.
        fn sizes<C: CombCurve>(name: &str) -> usize {
            let g = C::generator_comb().size_bytes();
            let key = Comb::<C>::new(C::ProjectivePoint::generator(), C::KEY_WIDTH).size_bytes();
            println!("{name}: generator table {g} bytes, per-key table {key} bytes");
            key
        }
        assert!(sizes::<p256::NistP256>("P-256") < 100_000);
        assert!(sizes::<p384::NistP384>("P-384") < 200_000);
        assert!(sizes::<p521::NistP521>("P-521") < 300_000);
    }
}
