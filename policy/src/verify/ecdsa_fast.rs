//! ECDSA verification with precomputed comb tables.
//!
//! ecdsa 0.16 computes u1·G + u2·Q with primeorder's constant-time
//! LinearCombination: two full scalar multiplications, about 256 doublings
//! each on P-256. Verification only touches public data, so here both
//! products are read off fixed-base comb tables, one per curve for G and one
//! per key for Q: R is then a sum of about one table point per window and
//! needs no doublings at all.
//!
//! The tables hold projective points. Normalising them to affine would make
//! each addition a little cheaper, but the curve crates do not expose field
//! elements, so there is no batch inversion to do it with, and one inversion
//! per table point would cost far more than it saves.

use std::sync::{Arc, OnceLock};

use p256::elliptic_curve::ff::PrimeField;
use p256::elliptic_curve::generic_array::typenum::Unsigned;
use p256::elliptic_curve::group::{Curve as _, Group};
use p256::elliptic_curve::ops::{Invert, Reduce};
use p256::elliptic_curve::point::AffineCoordinates;
use p256::elliptic_curve::{
    CurveArithmetic, FieldBytes, FieldBytesSize, NonZeroScalar, PrimeCurve,
};

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
// (about ⌈bits/width⌉ each). G's table is built once per process, so it can
// be wider than the per-key ones. Sizes are in the report accompanying this
// change and in `comb_sizes` below.
comb_curve!(p256::NistP256, generator_width = 6, key_width = 4);
comb_curve!(p384::NistP384, generator_width = 6, key_width = 4);
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
        let s_inv: C::Scalar = *Invert::invert_vartime(s);
        let u1 = z * s_inv;
        let u2 = **r * s_inv;
        let mut point = C::ProjectivePoint::identity();
        C::generator_comb().add_multiple(&mut point, &u1);
        self.comb().add_multiple(&mut point, &u2);
        // The identity maps to x = 0, which never equals a nonzero r.
        let x = point.to_affine().x();
        **r == <C::Scalar as Reduce<C::Uint>>::reduce_bytes(&x)
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
    use p256::elliptic_curve::Field as _;

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
