//! `declare!`: each metric written once — the static, and its registration (with its known
//! series at 0) in the file's `init`.

use prometheus::{
    GaugeVec, Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
};

use super::family::{Family, Vector};
use super::labels::Labels;

/// Registering a metric and exporting its known series at 0.
pub trait Zero {
    fn zero(&self) {}
}

impl Zero for IntCounter {}
impl Zero for IntGauge {}
impl Zero for Histogram {}
impl Zero for IntCounterVec {}
impl Zero for IntGaugeVec {}
impl Zero for GaugeVec {}
impl Zero for HistogramVec {}

impl<L: Labels, V: Vector> Zero for Family<L, V> {
    fn zero(&self) {
        Family::zero(self);
    }
}

/// Declares `pub static` metrics and an `init` that forces each one (registering it) and
/// zeroes its known series: the list of metrics is the declarations themselves.
macro_rules! declare {
    ($($(#[$meta:meta])* pub static $name:ident: $ty:ty = $init:expr;)+) => {
        $(
            $(#[$meta])*
            pub static $name: std::sync::LazyLock<$ty> = std::sync::LazyLock::new(|| $init);
        )+

        /// Registers this file's metrics and exports their known series at 0.
        pub(super) fn init() {
            $( $crate::metrics::declare::Zero::zero(&*$name); )+
        }
    };
}
