// Money, dates and weeks. Amounts are summed in integer cents: adding
// floats like 0.1 + 0.2 would show $0.30000000000000004 sooner or later.

const usd = new Intl.NumberFormat('en-US', { style: 'currency', currency: 'USD' });
const dayFmt = new Intl.DateTimeFormat(undefined, { weekday: 'short', month: 'short', day: 'numeric', year: 'numeric', timeZone: 'UTC' });
const shortDayFmt = new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric', timeZone: 'UTC' });
const timeFmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });

export const toCents = (amount) => (amount == null || amount === '' ? 0 : Math.round(Number(amount) * 100));
export const money = (cents) => usd.format(cents / 100);
export const moneyOf = (amount) => (amount == null ? '—' : money(toCents(amount)));

export function hours(h) {
  if (h == null || h === '') return '—';
  const n = Number(h);
  return `${Number.isInteger(n) ? n : n.toFixed(2).replace(/0$/, '')} h`;
}

/** `YYYY-MM-DD` as a UTC date, so no time zone moves it to the day before. */
export function parseDay(day) {
  const [y, m, d] = String(day).split('-').map(Number);
  return new Date(Date.UTC(y, (m || 1) - 1, d || 1));
}

export const formatDay = (day) => dayFmt.format(parseDay(day));

export function formatTime(ts) {
  const d = new Date(ts);
  return Number.isNaN(d.getTime()) ? '' : timeFmt.format(d);
}

/** Today in the user's own time zone, as the date input expects it. */
export function today() {
  const d = new Date();
  const pad = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
}

/** The day `n` days after a `YYYY-MM-DD` day (counted in UTC, so no DST shift). */
export function addDays(day, n) {
  const d = parseDay(day);
  d.setUTCDate(d.getUTCDate() + n);
  return d.toISOString().slice(0, 10);
}

/**
 * The ISO 8601 week of a day: weeks start on Monday and week 1 holds the
 * year's first Thursday, so Jan 1 may belong to the previous year's week 52/53.
 */
export function isoWeek(day) {
  const date = parseDay(day);
  const weekday = date.getUTCDay() || 7;
  const monday = new Date(date);
  monday.setUTCDate(date.getUTCDate() - weekday + 1);
  const thursday = new Date(date);
  thursday.setUTCDate(date.getUTCDate() + 4 - weekday);
  const year = thursday.getUTCFullYear();
  const jan1 = Date.UTC(year, 0, 1);
  const week = Math.ceil(((thursday - jan1) / 86_400_000 + 1) / 7);
  const sunday = new Date(monday);
  sunday.setUTCDate(monday.getUTCDate() + 6);
  return {
    key: `${year}-W${String(week).padStart(2, '0')}`,
    label: `${shortDayFmt.format(monday)} – ${shortDayFmt.format(sunday)}`,
  };
}
