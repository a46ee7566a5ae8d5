//! Saving and restoring cases through the safe API: `Case::save`, `Case::restore`,
//! `Case::check`, `Net::fingerprint`. The C tests (c/tests/test_restore.c) cover the refusals
//! in depth; here: the Rust face (errors, names), round trips on nets at several points, and a
//! proptest that mutated bytes are refused or give a valid case whose bytes are canonical.
//! The differential test saves and restores before every step of its random runs.
use knhk_kernel::{Case, CaseState, Error, Guard, GuardOp, Join, Net, Split, Term, CASE_BYTES};
use proptest::prelude::*;

/// i -> A (AND split) -> c1, c2; B: c1 -> XOR (r0 < 5 -> c3, else c4); C: c2 -> c5;
/// D: XOR join c3/c4 -> c6; E: AND join c5, c6 -> o. `k` is B's guard constant.
fn build(k: i64) -> Box<Net> {
    let mut net = Box::new(Net::new());
    let c: Vec<u32> = (0..8).map(|_| net.add_condition().unwrap()).collect();
    let (i, c1, c2, c3, c4, c5, c6, o) = (c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]);
    let a = net.add_task(Join::Xor, Split::And).unwrap();
    let b = net.add_task(Join::Xor, Split::Xor).unwrap();
    let cc = net.add_task(Join::Xor, Split::And).unwrap();
    let d = net.add_task(Join::Xor, Split::And).unwrap();
    let e = net.add_task(Join::And, Split::And).unwrap();
    net.set_input(i).unwrap();
    net.set_output(o).unwrap();
    net.input_flow(i, a).unwrap();
    net.output_flow(a, c1, None, false).unwrap();
    net.output_flow(a, c2, None, false).unwrap();
    net.input_flow(c1, b).unwrap();
    let lt = Guard::Term(Term::constant(0, GuardOp::Lt, k));
    net.output_flow(b, c3, Some(&lt), false).unwrap();
    net.output_flow(b, c4, None, true).unwrap();
    net.input_flow(c2, cc).unwrap();
    net.output_flow(cc, c5, None, false).unwrap();
    net.input_flow(c3, d).unwrap();
    net.input_flow(c4, d).unwrap();
    net.output_flow(d, c6, None, false).unwrap();
    net.input_flow(c5, e).unwrap();
    net.input_flow(c6, e).unwrap();
    net.output_flow(e, o, None, false).unwrap();
    net.seal().unwrap();
    net
}

/// CRC-32C as knhk.h documents it, to forge bytes whose checksum is right.
fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn reseal(bytes: &mut [u8; CASE_BYTES]) {
    let crc = crc32c(&bytes[..CASE_BYTES - 4]);
    bytes[CASE_BYTES - 4..].copy_from_slice(&crc.to_le_bytes());
}

fn set_word(bytes: &mut [u8; CASE_BYTES], at: usize, v: u64) {
    bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
    reseal(bytes);
}

#[test]
fn round_trip_at_every_step() {
    let net = build(5);
    for r0 in [0, 9] {
        let mut case = Case::new(&net).unwrap();
        case.regs_mut()[0] = r0;
        let order = [0u32, 2, 1, 3, 4];
        for (n, &t) in order.iter().enumerate() {
            let saved = case.save(&net).unwrap();
            let mut restored = Case::restore(&net, &saved).unwrap();
            assert_eq!(restored, case);
            // the rest of the run, fire by fire, on both
            let mut original = case;
            for &u in &order[n..] {
                assert_eq!(net.fire(&mut restored, u), net.fire(&mut original, u));
                assert_eq!(restored, original);
                assert_eq!(net.enabled(&restored), net.enabled(&original));
            }
            assert_eq!(net.state(&restored), CaseState::Complete);
            net.fire(&mut case, t).unwrap();
            assert_eq!(case.check(&net), Ok(()));
        }
        // a completed case saves and restores too
        let done = Case::restore(&net, &case.save(&net).unwrap()).unwrap();
        assert_eq!(done, case);
        assert_eq!(net.fire(&mut done.clone(), 0), Err(Error::CaseComplete));
    }
}

#[test]
fn fingerprints() {
    let (a, twin, other) = (build(5), build(5), build(6));
    assert!(a.fingerprint().is_some());
    assert_eq!(a.fingerprint(), twin.fingerprint());
    assert_ne!(a.fingerprint(), other.fingerprint());
    assert_eq!(Net::new().fingerprint(), None);
    let case = Case::new(&a).unwrap();
    let saved = case.save(&a).unwrap();
    assert_eq!(saved[8..16], a.fingerprint().unwrap().to_le_bytes());
    assert_eq!(Case::restore(&twin, &saved), Ok(case));
    assert_eq!(Case::restore(&other, &saved), Err(Error::WrongNet));
}

#[test]
fn refusals() {
    let net = build(5);
    let mut case = Case::new(&net).unwrap();
    net.fire(&mut case, 0).unwrap(); // c1, c2 marked
    let saved = case.save(&net).unwrap();
    assert_eq!(saved[0..4], *b"KNHC");

    assert_eq!(Case::restore(&net, &saved[..7]), Err(Error::BadLength));
    assert_eq!(
        Case::restore(&net, &saved[..CASE_BYTES - 1]),
        Err(Error::BadLength)
    );
    let mut long = saved.to_vec();
    long.push(0);
    assert_eq!(Case::restore(&net, &long), Err(Error::BadLength));
    assert_eq!(Case::restore(&net, &[]), Err(Error::BadLength));

    let mut x = saved;
    x[0] ^= 1;
    assert_eq!(Case::restore(&net, &x), Err(Error::BadFormat));
    let mut x = saved;
    x[20] ^= 0x10;
    assert_eq!(Case::restore(&net, &x), Err(Error::BadChecksum));

    let words = |at: usize, v: u64| {
        let mut x = saved;
        set_word(&mut x, at, v);
        Case::restore(&net, &x)
    };
    let (marking, busy, or_expect, absorb, enabled) = (16, 24, 32, 40, 48);
    assert_eq!(words(marking, 0b110 | 1 << 8), Err(Error::BadMarking));
    assert_eq!(words(busy, 1 << 5), Err(Error::BadBusy));
    assert_eq!(words(or_expect, 1 << 3), Err(Error::BadSideWords));
    assert_eq!(words(absorb, 1 << 3), Err(Error::BadSideWords));
    assert_eq!(words(marking, 0b110 | 1 << 7), Err(Error::BadCaseState));
    assert_eq!(words(marking, 0), Err(Error::BadCaseState));
    assert_eq!(words(enabled, 0), Err(Error::BadEnabled));
    let mut x = saved;
    x[64] = 2; // COMPLETED without DONE
    reseal(&mut x);
    assert_eq!(Case::restore(&net, &x), Err(Error::BadFlags));
    // registers and seq: anything
    assert!(words(72, u64::MAX).is_ok());
    assert!(words(56, 12345).is_ok());

    // another net's case is not valid here, nor savable
    let other = build(6);
    let mut foreign = Case::new(&other).unwrap();
    other.fire(&mut foreign, 0).unwrap();
    assert_eq!(foreign.check(&other), Ok(()));
    assert_eq!(foreign.check(&net), Ok(())); // same shape: valid words
    let mut tiny = Box::new(Net::new());
    let (i, o) = (tiny.add_condition().unwrap(), tiny.add_condition().unwrap());
    let t = tiny.add_task(Join::Xor, Split::And).unwrap();
    tiny.set_input(i).unwrap();
    tiny.set_output(o).unwrap();
    tiny.input_flow(i, t).unwrap();
    tiny.output_flow(t, o, None, false).unwrap();
    tiny.seal().unwrap();
    assert_eq!(foreign.check(&tiny), Err(Error::BadMarking));
    assert_eq!(foreign.save(&tiny), Err(Error::BadMarking));
    assert_eq!(Case::restore(&tiny, &saved), Err(Error::WrongNet));
    assert_eq!(Case::restore(&Net::new(), &saved), Err(Error::NotSealed));
}

#[test]
fn errors_named_and_mapped() {
    let all = [
        (Error::BadLength, "KNHK_BAD_LENGTH"),
        (Error::BadFormat, "KNHK_BAD_FORMAT"),
        (Error::BadChecksum, "KNHK_BAD_CHECKSUM"),
        (Error::WrongNet, "KNHK_WRONG_NET"),
        (Error::BadMarking, "KNHK_BAD_MARKING"),
        (Error::BadBusy, "KNHK_BAD_BUSY"),
        (Error::BadFlags, "KNHK_BAD_FLAGS"),
        (Error::BadSideWords, "KNHK_BAD_SIDE_WORDS"),
        (Error::BadCaseState, "KNHK_BAD_CASE_STATE"),
        (Error::BadEnabled, "KNHK_BAD_ENABLED"),
    ];
    for (e, name) in all {
        assert_eq!(e.name(), name);
        assert_eq!(Error::from_raw(e as u32), e);
        assert!(e.to_string().ends_with(&format!("({name})")));
    }
    for status in 1..knhk_kernel::sys::KNHK_STATUS_COUNT {
        assert_eq!(Error::from_raw(status) as u32, status);
    }
}

/// A case of `net` after `steps` random fires (seeded by the bytes).
fn case_after(net: &Net, steps: &[u8], r0: i64) -> Case {
    let mut case = Case::new(net).unwrap();
    case.regs_mut()[0] = r0;
    for &s in steps {
        let _ = net.fire(&mut case, u32::from(s % 6));
    }
    case
}

proptest! {
    /// Mutated bytes (with the checksum made right again half the time, so the checks behind
    /// it are reached): refused, or a valid case whose own bytes are the ones given.
    #[test]
    fn mutated_bytes_refused_or_valid(
        steps in proptest::collection::vec(any::<u8>(), 0..6),
        r0 in -2i64..8,
        edits in proptest::collection::vec((0usize..CASE_BYTES, any::<u8>(), any::<bool>()), 1..5),
        fix in any::<bool>(),
        cut in proptest::option::of(0usize..CASE_BYTES + 8),
    ) {
        let net = build(5);
        let case = case_after(&net, &steps, r0);
        let mut bytes = case.save(&net).unwrap();
        prop_assert_eq!(Case::restore(&net, &bytes), Ok(case));
        for (at, v, word) in edits {
            if word && (16..64).contains(&at) {
                // a whole word, one bit set: the likeliest way to hit a range check
                let w = (at - 16) / 8 * 8 + 16;
                bytes[w..w + 8].copy_from_slice(&(1u64 << (v % 64)).to_le_bytes());
            } else {
                bytes[at] ^= v | 1;
            }
        }
        if fix {
            reseal(&mut bytes);
        }
        let mut long = bytes.to_vec();
        long.extend_from_slice(&[0; 8]);
        let given = &long[..cut.unwrap_or(CASE_BYTES)];
        match Case::restore(&net, given) {
            Err(e) => prop_assert!(
                (Error::BadLength as u32..=Error::BadEnabled as u32).contains(&(e as u32))
                    || e == Error::BadMiSlot,
                "unexpected refusal {e}"
            ),
            Ok(restored) => {
                prop_assert_eq!(restored.check(&net), Ok(()));
                prop_assert_eq!(&restored.save(&net).unwrap()[..], given);
                let mut c = restored;
                for t in 0..6 {
                    let _ = net.fire(&mut c, t);
                    prop_assert_eq!(c.check(&net), Ok(()));
                }
            }
        }
    }
}
