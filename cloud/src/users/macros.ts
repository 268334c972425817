/**
 * Daily energy and macro targets from a member's body profile.
 *
 * - BMR: Mifflin-St Jeor (1990): 10·kg + 6.25·cm − 5·years + s, s = +5 (male), −161 (female); for other or
 *   unspecified sex the midpoint −78.
 * - TDEE: BMR × activity factor (sedentary 1.2, light 1.375, moderate 1.55, active 1.725, very active 1.9).
 * - Goal: lose weight −20 % (never below 1.1 × BMR nor 1200 kcal), gain muscle +10 %, otherwise TDEE.
 * - Split: protein by body weight (g/kg: lose 2.0, gain 1.8, endurance 1.4, otherwise 1.6), fat 25 % of energy
 *   (9 kcal/g), carbohydrates the rest (4 kcal/g; protein 4 kcal/g). Rounded to whole kcal and grams.
 */
import type { ActivityLevel, FitnessGoal, MacroTargets, Sex } from './models.ts';

export const ACTIVITY_FACTORS: Record<ActivityLevel, number> = {
  sedentary: 1.2,
  light: 1.375,
  moderate: 1.55,
  active: 1.725,
  very_active: 1.9,
};

const GOAL_ENERGY: Record<FitnessGoal, number> = {
  lose_weight: 0.8,
  maintain: 1,
  gain_muscle: 1.1,
  improve_endurance: 1,
  general_fitness: 1,
};

const PROTEIN_G_PER_KG: Record<FitnessGoal, number> = {
  lose_weight: 2.0,
  maintain: 1.6,
  gain_muscle: 1.8,
  improve_endurance: 1.4,
  general_fitness: 1.6,
};

const FAT_ENERGY_SHARE = 0.25;
const MIN_KCAL = 1200;

/** Whole years between a YYYY-MM-DD birth date and `now` (UTC). */
export function ageYears(dateOfBirth: string, now: Date): number {
  const [y, m, d] = dateOfBirth.split('-').map(Number) as [number, number, number];
  let age = now.getUTCFullYear() - y;
  if (now.getUTCMonth() + 1 < m || (now.getUTCMonth() + 1 === m && now.getUTCDate() < d)) age -= 1;
  return age;
}

/** BMI to one decimal; undefined without both values. */
export function bmiOf(weightKg: number | undefined, heightCm: number | undefined): number | undefined {
  if (weightKg === undefined || heightCm === undefined) return undefined;
  const m = heightCm / 100;
  return Math.round((weightKg / (m * m)) * 10) / 10;
}

export interface MacroInputs {
  weightKg: number | undefined;
  heightCm: number | undefined;
  dateOfBirth: string | null;
  sex: Sex | null;
  activityLevel: ActivityLevel | null;
  goal: FitnessGoal | null;
}

/** The targets, or null while weight, height or date of birth is unknown (activity and goal have defaults). */
export function macroTargets(input: MacroInputs, now: Date): MacroTargets | null {
  if (input.weightKg === undefined || input.heightCm === undefined || !input.dateOfBirth) return null;
  const age = ageYears(input.dateOfBirth, now);
  const sexTerm = input.sex === 'male' ? 5 : input.sex === 'female' ? -161 : -78;
  const bmr = 10 * input.weightKg + 6.25 * input.heightCm - 5 * age + sexTerm;
  const tdee = bmr * ACTIVITY_FACTORS[input.activityLevel ?? 'sedentary'];
  const goal = input.goal ?? 'maintain';
  let kcal = tdee * GOAL_ENERGY[goal];
  if (goal === 'lose_weight') kcal = Math.max(kcal, bmr * 1.1, MIN_KCAL);
  kcal = Math.max(kcal, MIN_KCAL);
  const proteinG = input.weightKg * PROTEIN_G_PER_KG[goal];
  const fatG = (kcal * FAT_ENERGY_SHARE) / 9;
  const carbsG = Math.max(0, (kcal - proteinG * 4 - fatG * 9) / 4);
  return {
    bmrKcal: Math.round(bmr),
    tdeeKcal: Math.round(tdee),
    kcal: Math.round(kcal),
    proteinG: Math.round(proteinG),
    fatG: Math.round(fatG),
    carbsG: Math.round(carbsG),
    method: 'mifflin-st-jeor',
    computedAt: now,
  };
}
