/**
 * Every test file: each query whose analysis the plugin reuses (src/plugin/shape-cache.ts) is also
 * analyzed in full, and a difference throws, so the whole suite checks the cache against the
 * analysis it stands for.
 */
import { verifyShapeCache } from '../../src/plugin/shape-cache.js'

verifyShapeCache(true)
