/**
 * Branches for other domains: `RunningCloud.branches.get(id)` → `{id, name, timeZone, openingHours}`, and the pure
 * opening-hours helpers (`isOpenAt(branch, ms)`, `closingAfter(branch, ms)`), which handle the branch's IANA zone
 * and daylight-saving changes.
 */
export { closingAfter, isOpenAt, isValidTimeZone, localDayOf, WEEKDAYS } from './hours.ts';
export type { BranchHours, OpeningHours, OpeningInterval, Weekday } from './hours.ts';
export type { Branch, BranchesService, BranchView } from './service.ts';
export { startBranchDomains, type BranchDomains } from './domains.ts';
