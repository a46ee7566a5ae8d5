//! The tick clock: one tick is one increment of the CPU's constant-rate counter (`rdtsc` on
//! x86-64, `cntvct_el0` on aarch64). Calibration against the monotonic clock (feature `std`)
//! gives ticks per nanosecond; every reported figure should carry it.
//!
//! Never read the counter around a single operation: measure a large batch and divide.

/// The current tick count. Not serialising: instructions may be reordered around it, which is
/// why per-op costs are measured over large batches.
#[inline(always)]
pub fn ticks() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: rdtsc is available on every x86-64 CPU and has no memory effects.
        #[allow(unused_unsafe)]
        unsafe {
            core::arch::x86_64::_rdtsc()
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        let v: u64;
        // SAFETY: cntvct_el0 is readable from EL0 on Linux and macOS; the read has no side
        // effects on memory.
        unsafe { core::arch::asm!("mrs {}, cntvct_el0", out(reg) v, options(nomem, nostack)) };
        v
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        compile_error!("knhk-kernel: no tick counter for this architecture");
    }
}

/// The tick count after all earlier instructions have completed (`lfence; rdtsc`), for the
/// edges of a measured batch.
#[inline(always)]
pub fn ticks_fenced() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: lfence and rdtsc exist on every x86-64 CPU with SSE2 (all of them) and have
        // no memory effects.
        #[allow(unused_unsafe)]
        unsafe {
            core::arch::x86_64::_mm_lfence();
            core::arch::x86_64::_rdtsc()
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
        ticks()
    }
}

/// Ticks per nanosecond, measured against the monotonic clock.
#[cfg(feature = "std")]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Calibration {
    /// Ticks per nanosecond.
    pub ticks_per_ns: f64,
    /// Length of the measurement window.
    pub window: std::time::Duration,
}

#[cfg(feature = "std")]
impl Calibration {
    /// Measures the tick rate over `window` (a few milliseconds suffice for a constant TSC).
    pub fn measure(window: std::time::Duration) -> Calibration {
        let t0 = std::time::Instant::now();
        let c0 = ticks_fenced();
        while t0.elapsed() < window {
            std::hint::spin_loop();
        }
        let c1 = ticks_fenced();
        let elapsed = t0.elapsed();
        Calibration {
            ticks_per_ns: (c1.wrapping_sub(c0)) as f64 / elapsed.as_nanos().max(1) as f64,
            window: elapsed,
        }
    }

    /// Nanoseconds for `ticks` ticks.
    pub fn to_ns(&self, ticks: f64) -> f64 {
        ticks / self.ticks_per_ns
    }
}

#[cfg(feature = "std")]
impl core::fmt::Display for Calibration {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "{:.4} ticks/ns ({:.1} MHz tick clock, measured over {:?})",
            self.ticks_per_ns,
            self.ticks_per_ns * 1000.0,
            self.window
        )
    }
}

#[cfg(all(test, feature = "std"))]
mod tests {
    #[test]
    fn ticks_advance_and_calibrate() {
        let a = super::ticks();
        let cal = super::Calibration::measure(std::time::Duration::from_millis(5));
        assert!(super::ticks() > a);
        assert!(cal.ticks_per_ns > 0.01 && cal.ticks_per_ns < 100.0, "{cal}");
    }
}
