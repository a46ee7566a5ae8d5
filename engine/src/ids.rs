//! Case ids: the bit layout handed to clients and written to the event log.
//!
//! ```text
//!  63  62        53 52                 32 31                              0
//! +---+------------+---------------------+---------------------------------+
//! | 0 | partition  | generation          | local: global slot + 1 (≠ 0)    |
//! +---+------------+---------------------+---------------------------------+
//!   1      10               21                         32
//! ```
//!
//! - `local`: the case's slot on this node, `slot * workers + shard + 1` (0 is never an id).
//! - `generation`: how many times the slot has been reused; a reused slot gets a new one, so an
//!   evicted case's id is never given to another case (until 2^21 reuses of one slot wrap it).
//! - `partition`: the partition that owns the case. A single node owns partition 0, so its ids
//!   are `(generation << 32) | local`, the same numbers as before the field existed.
//! - bit 63 is always 0, so ids stay positive in languages with signed 64-bit integers.

/// Bits of the local part.
pub const LOCAL_BITS: u32 = 32;
/// Bits of the generation.
pub const GENERATION_BITS: u32 = 21;
/// Bits of the partition.
pub const PARTITION_BITS: u32 = 10;
/// Partitions an id can name.
pub const MAX_PARTITIONS: u32 = 1 << PARTITION_BITS;
/// Largest generation; the next reuse of a slot wraps to 0.
pub const GENERATION_MASK: u32 = (1 << GENERATION_BITS) - 1;

const GENERATION_SHIFT: u32 = LOCAL_BITS;
const PARTITION_SHIFT: u32 = LOCAL_BITS + GENERATION_BITS;

/// The fields of a case id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaseId {
    /// The owning partition (0 on a single node).
    pub partition: u16,
    /// Reuses of the slot.
    pub generation: u32,
    /// Global slot + 1 (never 0 in a valid id).
    pub local: u32,
}

impl CaseId {
    /// Packs the fields; `None` when one does not fit its bits or `local` is 0.
    pub fn encode(self) -> Option<u64> {
        (self.local != 0
            && u32::from(self.partition) < MAX_PARTITIONS
            && self.generation <= GENERATION_MASK)
            .then(|| {
                (u64::from(self.partition) << PARTITION_SHIFT)
                    | (u64::from(self.generation) << GENERATION_SHIFT)
                    | u64::from(self.local)
            })
    }

    /// Unpacks an id; `None` for 0 (local part 0) or an id with bit 63 set.
    pub fn decode(id: u64) -> Option<CaseId> {
        if id >> 63 != 0 {
            return None;
        }
        let local = (id & 0xffff_ffff) as u32;
        (local != 0).then_some(CaseId {
            partition: (id >> PARTITION_SHIFT) as u16,
            generation: (id >> GENERATION_SHIFT) as u32 & GENERATION_MASK,
            local,
        })
    }
}

/// The ids of partition `p`'s cases: `p << 53 .. (p + 1) << 53` (every id of a single node,
/// partition 0, is in `0 .. 1 << 53`).
pub fn partition_ids(p: u16) -> std::ops::Range<u64> {
    let p = u64::from(p) & (u64::from(MAX_PARTITIONS) - 1);
    (p << PARTITION_SHIFT)..((p + 1) << PARTITION_SHIFT)
}

/// The next generation of a slot (wraps within its bits).
pub fn next_generation(g: u32) -> u32 {
    g.wrapping_add(1) & GENERATION_MASK
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn partition_ids_hold_exactly_their_partitions_ids() {
        for p in [0u16, 1, 7, 1023] {
            let r = partition_ids(p);
            for (partition, generation, local) in
                [(p, 0, 1), (p, GENERATION_MASK, u32::MAX), (p, 5, 77)]
            {
                let id = CaseId {
                    partition,
                    generation,
                    local,
                }
                .encode()
                .unwrap();
                assert!(r.contains(&id), "{id:#x} in partition {p}'s range");
            }
            if p > 0 {
                let below = CaseId {
                    partition: p - 1,
                    generation: GENERATION_MASK,
                    local: u32::MAX,
                }
                .encode()
                .unwrap();
                assert!(!r.contains(&below));
            }
        }
    }

    #[test]
    fn partition_zero_ids_are_the_historical_numbers() {
        let id = CaseId {
            partition: 0,
            generation: 3,
            local: 17,
        };
        assert_eq!(id.encode(), Some((3 << 32) | 17));
        assert_eq!(CaseId::decode((3 << 32) | 17), Some(id));
        assert_eq!(CaseId::decode(1).map(|c| c.local), Some(1));
    }

    #[test]
    fn fields_round_trip_and_stay_in_their_bits() {
        let id = CaseId {
            partition: 1023,
            generation: GENERATION_MASK,
            local: u32::MAX,
        };
        let raw = id.encode().expect("fits");
        assert_eq!(raw >> 63, 0, "bit 63 stays clear");
        assert_eq!(CaseId::decode(raw), Some(id));
        let p5 = CaseId {
            partition: 5,
            generation: 0,
            local: 1,
        };
        assert_eq!(p5.encode(), Some((5u64 << 53) | 1));
    }

    #[test]
    fn out_of_range_fields_and_ids_are_refused() {
        let base = CaseId {
            partition: 0,
            generation: 0,
            local: 1,
        };
        assert_eq!(CaseId { local: 0, ..base }.encode(), None);
        assert_eq!(
            CaseId {
                partition: 1024,
                ..base
            }
            .encode(),
            None
        );
        assert_eq!(
            CaseId {
                generation: GENERATION_MASK + 1,
                ..base
            }
            .encode(),
            None
        );
        assert_eq!(CaseId::decode(0), None);
        assert_eq!(CaseId::decode(1 << 63 | 1), None);
        assert_eq!(next_generation(GENERATION_MASK), 0);
    }
}
