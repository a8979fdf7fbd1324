// Statistics the benchmark scripts share.
'use strict';

/** The median of `values` (the upper one of the middle two for an even count), without reordering them. */
function median(values) {
  return [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
}

module.exports = { median };
