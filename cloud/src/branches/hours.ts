/**
 * Opening hours in a branch's own IANA time zone, and the pure questions sessions ask of them: is the branch open at
 * an instant, and when does the current opening end. Local wall-clock times become instants through Intl (no
 * library, no fixed offsets), so daylight-saving changes are handled: on a 23-hour day a 06:00–22:00 opening is 15
 * hours long in real time, and on a 25-hour day 17.
 *
 * Each weekday holds up to four intervals `{open, close}` in local "HH:MM"; `close` may be "24:00" (midnight at the
 * end of the day), and a `close` earlier than `open` runs past midnight into the next day ("22:00"–"02:00"). An empty
 * day is closed. A local time that does not exist (the hour skipped when clocks go forward) is taken as the instant
 * the same number of minutes after the previous valid time, the way Temporal's "compatible" disambiguation does.
 */

export const WEEKDAYS = ['monday', 'tuesday', 'wednesday', 'thursday', 'friday', 'saturday', 'sunday'] as const;
export type Weekday = (typeof WEEKDAYS)[number];

export interface OpeningInterval {
  /** Local "HH:MM", 00:00–23:59. */
  open: string;
  /** Local "HH:MM", 00:00–24:00; at or before `open`: the next day. */
  close: string;
}

export type OpeningHours = Record<Weekday, OpeningInterval[]>;

/** What the hours helpers need of a branch. */
export interface BranchHours {
  timeZone: string;
  openingHours: OpeningHours;
}

const DAY_MS = 86_400_000;
/** How far closingAfter looks for the end of an opening (a branch open around the clock never closes). */
const LOOKAHEAD_DAYS = 8;

const formatters = new Map<string, Intl.DateTimeFormat>();

function formatterFor(timeZone: string): Intl.DateTimeFormat {
  let f = formatters.get(timeZone);
  if (!f) {
    f = new Intl.DateTimeFormat('en-US', {
      timeZone,
      hourCycle: 'h23',
      year: 'numeric',
      month: 'numeric',
      day: 'numeric',
      hour: 'numeric',
      minute: 'numeric',
      second: 'numeric',
    });
    formatters.set(timeZone, f);
  }
  return f;
}

/** Whether `timeZone` is an IANA zone name this runtime knows ("Europe/Berlin", "UTC"). */
export function isValidTimeZone(timeZone: string): boolean {
  if (typeof timeZone !== 'string' || timeZone.length === 0 || timeZone.length > 64) return false;
  // Names only: Intl also takes offsets ("+02:00"), which know no daylight saving.
  if (!/^[A-Za-z][A-Za-z_]*(?:\/[A-Za-z0-9_+-]+)*$/.test(timeZone)) return false;
  try {
    formatterFor(timeZone);
    return true;
  } catch {
    return false;
  }
}

interface LocalParts {
  year: number;
  month: number;
  day: number;
  hour: number;
  minute: number;
  second: number;
}

function localParts(ms: number, timeZone: string): LocalParts {
  const parts: Partial<Record<Intl.DateTimeFormatPartTypes, number>> = {};
  for (const p of formatterFor(timeZone).formatToParts(new Date(ms))) {
    if (p.type !== 'literal') parts[p.type] = Number(p.value);
  }
  return {
    year: parts.year!,
    month: parts.month!,
    day: parts.day!,
    hour: parts.hour! % 24,
    minute: parts.minute!,
    second: parts.second!,
  };
}

/** The zone's offset from UTC at instant `ms`, in ms (local = UTC + offset). */
function offsetAt(ms: number, timeZone: string): number {
  const p = localParts(ms, timeZone);
  const asUtc = Date.UTC(p.year, p.month - 1, p.day, p.hour, p.minute, p.second);
  return asUtc - (ms - (ms % 1000));
}

/**
 * The instant of a local wall-clock time (`minutes` after local midnight of year-month-day, may exceed 1440). An
 * ambiguous time (clocks going back) is its earlier instant; a skipped one is moved forward by the gap.
 */
export function zonedInstant(year: number, month: number, day: number, minutes: number, timeZone: string): number {
  const wall = Date.UTC(year, month - 1, day) + minutes * 60_000;
  // Two candidates, from the offsets a day either side; the earlier one that maps back to `wall` wins.
  const before = offsetAt(wall - DAY_MS, timeZone);
  const after = offsetAt(wall + DAY_MS, timeZone);
  const candidates = [...new Set([before, after])].map((o) => wall - o).sort((a, b) => a - b);
  for (const c of candidates) if (c + offsetAt(c, timeZone) === wall) return c;
  // A skipped local time: interpret it with the offset in force before the change (lands after the gap).
  return wall - before;
}

function minutesOf(hhmm: string): number {
  const [h, m] = hhmm.split(':').map(Number) as [number, number];
  return h * 60 + m;
}

/** Local midnight's calendar date of instant `ms` (year, month, day) and its weekday. */
function localDate(ms: number, timeZone: string): { year: number; month: number; day: number; weekday: Weekday } {
  const p = localParts(ms, timeZone);
  const dow = new Date(Date.UTC(p.year, p.month - 1, p.day)).getUTCDay(); // 0 = Sunday
  return { year: p.year, month: p.month, day: p.day, weekday: WEEKDAYS[(dow + 6) % 7]! };
}

/** The openings that start on local days from `fromDay` (offset from the day of `ms`) for `days` days, as instants. */
function openingsAround(branch: BranchHours, ms: number, fromDay: number, days: number): [number, number][] {
  const { timeZone, openingHours } = branch;
  const today = localDate(ms, timeZone);
  const out: [number, number][] = [];
  for (let d = fromDay; d < fromDay + days; d++) {
    const date = new Date(Date.UTC(today.year, today.month - 1, today.day + d));
    const [y, mo, da] = [date.getUTCFullYear(), date.getUTCMonth() + 1, date.getUTCDate()];
    const weekday = WEEKDAYS[(date.getUTCDay() + 6) % 7]!;
    for (const interval of openingHours[weekday] ?? []) {
      const open = minutesOf(interval.open);
      let close = minutesOf(interval.close);
      if (close <= open) close += 24 * 60;
      out.push([zonedInstant(y, mo, da, open, timeZone), zonedInstant(y, mo, da, close, timeZone)]);
    }
  }
  out.sort((a, b) => a[0] - b[0]);
  // Adjacent and overlapping openings are one (Monday 18:00–24:00 and Tuesday 00:00–02:00 close at 02:00).
  const merged: [number, number][] = [];
  for (const [start, end] of out) {
    const last = merged.at(-1);
    if (last && start <= last[1]) last[1] = Math.max(last[1], end);
    else merged.push([start, end]);
  }
  return merged;
}

/** Whether the branch is open at instant `ms`. */
export function isOpenAt(branch: BranchHours, ms: number): boolean {
  return openingsAround(branch, ms, -1, 2).some(([start, end]) => start <= ms && ms < end);
}

/**
 * When the opening the branch is in at `ms` ends (an instant, ms); undefined when it is closed at `ms`, or open
 * without a break for the next week (around the clock).
 */
export function closingAfter(branch: BranchHours, ms: number): number | undefined {
  const horizon = ms + LOOKAHEAD_DAYS * DAY_MS - DAY_MS;
  const current = openingsAround(branch, ms, -1, LOOKAHEAD_DAYS + 1).find(([start, end]) => start <= ms && ms < end);
  if (!current) return undefined;
  return current[1] >= horizon ? undefined : current[1];
}

/** Problems with a set of opening hours (empty when valid): overlapping intervals on one day, too many. */
export function openingHoursProblems(hours: OpeningHours): string[] {
  const problems: string[] = [];
  for (const day of WEEKDAYS) {
    const intervals = (hours[day] ?? [])
      .map((i) => {
        const open = minutesOf(i.open);
        const close = minutesOf(i.close);
        return [open, close <= open ? close + 1440 : close] as const;
      })
      .sort((a, b) => a[0] - b[0]);
    for (let i = 1; i < intervals.length; i++) {
      if (intervals[i]![0] < intervals[i - 1]![1]) problems.push(`${day}: intervals overlap`);
    }
  }
  return problems;
}

/** Local "YYYY-MM-DD" and weekday of an instant in the branch's zone (for analytics by local day). */
export function localDayOf(ms: number, timeZone: string): { date: string; weekday: Weekday; hour: number } {
  const p = localParts(ms, timeZone);
  const { weekday } = localDate(ms, timeZone);
  const pad = (n: number) => String(n).padStart(2, '0');
  return { date: `${p.year}-${pad(p.month)}-${pad(p.day)}`, weekday, hour: p.hour };
}
