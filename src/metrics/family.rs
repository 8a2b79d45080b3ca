//! A labelled metric whose label values are typed: `TASKS.with((TaskKind::Shard,
//! TaskOutcome::Ok))` rather than strings, and every known series exported at 0.

use std::marker::PhantomData;

use prometheus::{Histogram, HistogramVec, IntCounter, IntCounterVec};

use super::labels::Labels;

/// A `prometheus` vector of series, one per combination of label values.
pub trait Vector {
    type Series;
    fn series(&self, values: &[&str]) -> Self::Series;
}

impl Vector for IntCounterVec {
    type Series = IntCounter;
    fn series(&self, values: &[&str]) -> IntCounter {
        self.with_label_values(values)
    }
}

impl Vector for HistogramVec {
    type Series = Histogram;
    fn series(&self, values: &[&str]) -> Histogram {
        self.with_label_values(values)
    }
}

/// A metric vector whose label values are the variants of `L` (one label enum, or a pair).
pub struct Family<L, V> {
    inner: V,
    labels: PhantomData<fn(L)>,
}

/// Counters labelled by `L`.
pub type Counters<L> = Family<L, IntCounterVec>;
/// Histograms labelled by `L`.
pub type Histograms<L> = Family<L, HistogramVec>;

impl<L: Labels, V: Vector> Family<L, V> {
    /// Wraps a registered vector whose label names match `L`'s order.
    pub fn new(inner: V) -> Self {
        Self {
            inner,
            labels: PhantomData,
        }
    }

    /// The series for `labels`.
    pub fn with(&self, labels: L) -> V::Series {
        self.inner.series(&labels.values())
    }

    /// Creates every series at 0, so a rate or an alert over something that has not
    /// happened yet reads 0 instead of "no data".
    pub fn zero(&self) {
        for labels in L::all() {
            self.with(labels);
        }
    }
}
