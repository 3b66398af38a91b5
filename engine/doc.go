// Package engine is Capstan's pure policy engine: Limitr-compatible credits, plans,
// entitlements, limits, grants and spend caps, and the allow/check decision over them.
//
// The engine owns policy loading and validation, customer state (meters, grants, caps,
// overrides, holds) and every decision and read. It never does I/O, never reads a
// clock, never starts a goroutine and keeps no global state: every call that can
// change state takes `now` (Unix milliseconds, UTC), which the replicated log stamps.
// Iteration over state is always in a fixed order (sorted keys or insertion-ordered
// slices), so the same calls on the same state give byte-identical results on every
// replica.
//
// # Money and rounding
//
// Every amount and quantity is a shopspring/decimal. Addition, subtraction and
// multiplication are exact. Division (exchange conversions into a currency worth
// more or less than one rune, token-bucket refill fractions, percentages) rounds to
// DivScale (18) decimal places, half away from zero. Nothing else rounds: state keeps
// full precision and callers choose how to display it. The package never changes
// shopspring/decimal's package-level settings.
//
// # Where Capstan differs from Limitr 0.7.0
//
//  1. reset_sch or reset_inc implies resets, even when `resets: true` is left out.
//  2. An ignore_grants cap without overage_only is checked before the call like any
//     other cap.
//  3. Calendar schedules are exact UTC calendar math (monthly:31 in April is the 30th).
//  4. Amounts are exact decimals; the ceiling comparison is exact.
//  5. allow/check answer with detail (reason, cap_id, remaining, resets-at).
//  6. A decrement never creates overage and never draws grants.
//  7. Stof functions are never executed; a credit's cost function is written as a CEL
//     expression (`overhead_expr`) instead.
//  8. Generated ids (caps, grants, holds) are deterministic sequences per customer,
//     never random.
package engine
