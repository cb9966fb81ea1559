//! Fixed-point arithmetic for the replicated fair-share path: decay and the fair-share
//! factor are powers of two with fractional exponents, and `f64::powf`/`exp2` are not
//! guaranteed to round the same on every platform or libm. Two heads that rounded one
//! decay differently would order the queue differently from then on (a silent split), so
//! everything here is integer math: bit-for-bit the same on every replica.

/// One in Q32 (the fixed-point form of factors in [0, 1]).
pub const ONE_Q32: u64 = 1 << 32;

/// `2^(-2^-i) * 2^62` for i = 1..=32, rounded to nearest (computed with 60-digit decimal
/// arithmetic; `table_matches_f64` checks them against `f64`).
const HALVINGS_Q62: [u64; 32] = [
    3260954456333195553,
    3877950241171266237,
    4228934724888366668,
    4416165660797809419,
    4512867096753504463,
    4562008997483360349,
    4586780255215411731,
    4599216278082138665,
    4605446927862164404,
    4608565417332308035,
    4610125453837388245,
    4610905670110601999,
    4611295827762151833,
    4611490918967884501,
    4611588467665893036,
    4611637242788701951,
    4611661630543559956,
    4611673824469352645,
    4611679921444339948,
    4611682969934856344,
    4611684494180870228,
    4611685256304066092,
    4611685637365711255,
    4611685827896545643,
    4611685923161965790,
    4611685970794676601,
    4611685994611032191,
    4611686006519210032,
    4611686012473298964,
    4611686015450343433,
    4611686016938865668,
    4611686017683126786,
];

/// `2^(-x)` for `x` in Q32 (x = `x_q32 / 2^32`), as a Q32 number in [0, 2^32]. The
/// fractional part of `x` is taken bit by bit: `2^(-f) = prod 2^(-2^-i)` over the bits of
/// `f`, each a table constant, multiplied in Q62. Relative error below 1e-9.
pub fn exp2_neg_q32(x_q32: u128) -> u64 {
    let int = x_q32 >> 32;
    if int >= 33 {
        return 0;
    }
    let frac = (x_q32 & u128::from(u32::MAX)) as u32;
    let mut r: u128 = 1 << 62;
    for (i, c) in HALVINGS_Q62.iter().enumerate() {
        if frac & (1 << (31 - i)) != 0 {
            r = (r * u128::from(*c)) >> 62;
        }
    }
    // Q62 to Q32, divided by 2^int, rounded to nearest.
    let shift = 30 + int as u32;
    ((r + (1u128 << (shift - 1))) >> shift) as u64
}

/// `v * f / 2^32` for a Q32 factor `f` (at most [`ONE_Q32`]), rounded down; saturates
/// instead of wrapping (usage that large is beyond any cluster's lifetime).
pub fn mul_q32(v: u128, f: u64) -> u128 {
    match v.checked_mul(u128::from(f)) {
        Some(p) => p >> 32,
        None => (v >> 32).saturating_mul(u128::from(f)),
    }
}

/// `a / b` as a Q32 number (b > 0), saturating.
pub fn ratio_q32(a: u128, b: u128) -> u128 {
    if b == 0 {
        return 0;
    }
    match a.checked_shl(32).filter(|s| s >> 32 == a) {
        Some(s) => s / b,
        None => a / (b >> 32).max(1),
    }
}

/// A Q32 number as a decimal with six places (`0.707107`), for display.
pub fn q32_text(v: u64) -> String {
    let micro = (u128::from(v) * 1_000_000 + (1 << 31)) >> 32;
    format!("{}.{:06}", micro / 1_000_000, micro % 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_matches_f64() {
        for (i, c) in HALVINGS_Q62.iter().enumerate() {
            let want = (-(0.5f64.powi(i as i32 + 1))).exp2();
            let got = *c as f64 / (1u64 << 62) as f64;
            assert!((want - got).abs() < 1e-15, "entry {i}: {got} vs {want}");
        }
    }

    #[test]
    fn powers_of_two_are_exact_and_fractions_close() {
        assert_eq!(exp2_neg_q32(0), ONE_Q32);
        assert_eq!(exp2_neg_q32(1 << 32), ONE_Q32 / 2);
        assert_eq!(exp2_neg_q32(3 << 32), ONE_Q32 / 8);
        assert_eq!(exp2_neg_q32(40 << 32), 0);
        for x in [0.001f64, 0.25, 0.5, 0.7, 1.3, 5.999, 20.5] {
            let got = exp2_neg_q32((x * ONE_Q32 as f64) as u128) as f64 / ONE_Q32 as f64;
            let want = (-x).exp2();
            assert!((got - want).abs() < 2e-9, "2^-{x}: {got} vs {want}");
        }
        // Decays compose: two half half-lives are one half-life (to rounding).
        let half = exp2_neg_q32(1 << 31);
        let twice = mul_q32(mul_q32(1 << 40, half), half);
        assert!((twice as i128 - (1i128 << 39)).abs() < 1 << 10, "{twice}");
    }

    #[test]
    fn ratios_and_text() {
        assert_eq!(ratio_q32(1, 4), u128::from(ONE_Q32 / 4));
        assert_eq!(ratio_q32(5, 0), 0);
        assert_eq!(q32_text(ONE_Q32 / 2), "0.500000");
        assert_eq!(q32_text(ONE_Q32), "1.000000");
        // Too large to multiply exactly: still about half, never wrapped.
        let half = mul_q32(u128::MAX, ONE_Q32 / 2);
        assert!(half <= u128::MAX >> 1 && half > (u128::MAX >> 1) - (1 << 32));
    }
}
