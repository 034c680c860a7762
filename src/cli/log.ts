import { createConsola } from 'consola'

/**
 * The CLI's printer. Level 3 (info) unless `CONSOLA_LEVEL` says otherwise: consola's own default
 * drops to errors only under test runners and CI, where results must still be printed.
 */
export const consola = createConsola({ level: Number(process.env.CONSOLA_LEVEL ?? 3) })
