/**
 * A dependency-free SVG chart of one run: per-field encrypt+decrypt throughput (log scale), and
 * the database ratios of the plugin against its references, with the target drawn on each bar.
 */
import type { EngineResult } from './db.js'
import { FLOOR_THROUGH_KYSELY_PLUGIN } from './db-variants.js'
import type { FieldResults } from './fields.js'
import { dbRatio, encDecMs, OP_LABEL } from './targets.js'

interface Bar {
  readonly label: string
  readonly value: number
  readonly text: string
  readonly highlight?: boolean
  /** A target marker, in the bar's units. */
  readonly target?: number
}

interface Panel {
  readonly title: string
  readonly groups: ReadonlyArray<{ readonly title: string; readonly bars: readonly Bar[] }>
  readonly scale: 'log' | 'linear'
}

const ROW = 16
const LABEL_W = 330
const PLOT_W = 360
const TEXT_W = 90
const WIDTH = LABEL_W + PLOT_W + TEXT_W + 20

function xml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')
}

function panel(p: Panel, top: number): { svg: string; height: number } {
  const values = p.groups.flatMap((g) => g.bars.flatMap((b) => [b.value, b.target ?? b.value]))
  const max = Math.max(...values)
  const min = Math.min(...values.filter((v) => v > 0))
  const lo = p.scale === 'log' ? 10 ** Math.floor(Math.log10(min)) : 0
  const hi = p.scale === 'log' ? 10 ** Math.ceil(Math.log10(max)) : max * 1.1
  const x = (v: number) =>
    p.scale === 'log'
      ? (PLOT_W * (Math.log10(Math.max(v, lo)) - Math.log10(lo))) / (Math.log10(hi) - Math.log10(lo))
      : (PLOT_W * v) / hi
  const parts: string[] = [`<text x="10" y="${top + 16}" class="title">${xml(p.title)}</text>`]
  let y = top + 28
  for (const g of p.groups) {
    parts.push(`<text x="10" y="${y + 12}" class="group">${xml(g.title)}</text>`)
    y += ROW
    for (const b of g.bars) {
      const w = Math.max(1, x(b.value))
      parts.push(
        `<text x="${LABEL_W - 6}" y="${y + 11}" class="label" text-anchor="end">${xml(b.label)}</text>`,
      )
      parts.push(
        `<rect x="${LABEL_W}" y="${y + 2}" width="${w.toFixed(1)}" height="${ROW - 4}" class="${b.highlight ? 'ours' : 'bar'}"/>`,
      )
      if (b.target !== undefined) {
        const tx = LABEL_W + x(b.target)
        parts.push(
          `<line x1="${tx.toFixed(1)}" x2="${tx.toFixed(1)}" y1="${y}" y2="${y + ROW}" class="target"/>`,
        )
      }
      parts.push(`<text x="${LABEL_W + PLOT_W + 6}" y="${y + 11}" class="value">${xml(b.text)}</text>`)
      y += ROW
    }
    y += 4
  }
  if (p.scale === 'log') {
    for (let v = lo; v <= hi * 1.0001; v *= 10) {
      const tx = LABEL_W + x(v)
      parts.push(
        `<line x1="${tx.toFixed(1)}" x2="${tx.toFixed(1)}" y1="${top + 24}" y2="${y}" class="grid"/>`,
      )
      parts.push(
        `<text x="${tx.toFixed(1)}" y="${y + 12}" class="axis" text-anchor="middle">${v.toLocaleString('en-US')}</text>`,
      )
    }
  } else {
    const tx = LABEL_W + x(1)
    parts.push(`<line x1="${tx.toFixed(1)}" x2="${tx.toFixed(1)}" y1="${top + 24}" y2="${y}" class="grid"/>`)
    parts.push(`<text x="${tx.toFixed(1)}" y="${y + 12}" class="axis" text-anchor="middle">1.0×</text>`)
  }
  return { svg: parts.join('\n'), height: y + 20 - top }
}

/** The chart of one run, as an SVG document. */
export function chartSvg(fields: FieldResults | undefined, db: readonly EngineResult[] | undefined): string {
  const panels: Panel[] = []
  if (fields !== undefined) {
    panels.push({
      title: 'Per field: encrypt + decrypt, operations per second (median, log scale; higher is better)',
      scale: 'log',
      groups: fields.payloads.map((p) => ({
        title: p.label,
        bars: fields.libraries.flatMap((lib) => {
          const ms = encDecMs(fields, p.id, lib.id)
          if (ms === undefined) return []
          const ops = 1000 / ms
          return [
            {
              label: lib.label,
              value: ops,
              text: Math.round(ops).toLocaleString('en-US'),
              highlight: lib.id === 'ours',
            },
          ]
        }),
      })),
    })
  }
  if (db?.some((e) => e.timings !== undefined)) {
    panels.push({
      title: 'Database: time relative to the reference (median; lower is better; | = target)',
      scale: 'linear',
      groups: db
        .filter((e) => e.timings !== undefined)
        .map((e) => ({
          title: e.engine,
          bars: (['insert', 'lookup', 'selectAll'] as const).flatMap((op) =>
            (
              [
                ['plugin', 'plugin / floor', op === 'lookup' ? 1.05 : 1.1],
                [
                  FLOOR_THROUGH_KYSELY_PLUGIN.id,
                  "floor via Kysely's WithSchemaPlugin / floor",
                  op === 'lookup' ? 1.05 : 1.1,
                ],
                ['plugin-plain', 'plugin plaintext table / plain', 1.02],
              ] as const
            ).flatMap(([variant, label, target]) => {
              const r = dbRatio(e, variant, op)
              if (r === undefined) return []
              return [
                {
                  label: `${OP_LABEL[op]}: ${label}`,
                  value: r,
                  text: `${r.toFixed(2)}×`,
                  // The bare-plugin reference in grey: a yardstick, not ours.
                  highlight: variant !== FLOOR_THROUGH_KYSELY_PLUGIN.id,
                  target,
                },
              ]
            }),
          ),
        })),
    })
  }
  let top = 0
  const body: string[] = []
  for (const p of panels) {
    const { svg, height } = panel(p, top)
    body.push(svg)
    top += height
  }
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${top}" viewBox="0 0 ${WIDTH} ${top}" font-family="system-ui, sans-serif">`,
    '<style>.title{font-size:13px;font-weight:600}.group{font-size:12px;font-weight:600}.label,.value,.axis{font-size:11px}.bar{fill:#9aa5b1}.ours{fill:#2f6fdf}.target{stroke:#d33;stroke-width:2}.grid{stroke:#ddd}</style>',
    `<rect width="${WIDTH}" height="${top}" fill="#fff"/>`,
    ...body,
    '</svg>',
    '',
  ].join('\n')
}
