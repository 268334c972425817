/**
 * The members domain's services, built together from one context (what routes, export and deletion use).
 */
import { createActivityService, type ActivityService } from './activity.ts';
import { createAdminService, type AdminService } from './admin.ts';
import { createBodyMetricsService, type BodyMetricsService } from './body-metrics.ts';
import type { UsersContext } from './context.ts';
import { createDeviceService, type DeviceService } from './devices.ts';
import { createFeedbackService, type FeedbackService } from './feedback.ts';
import { createMembershipService, type MembershipService } from './memberships.ts';
import { createProfileService, type ProfileService } from './profile.ts';
import { createSettingsService, type SettingsService } from './settings.ts';

export interface UsersServices {
  profiles: ProfileService;
  bodyMetrics: BodyMetricsService;
  settings: SettingsService;
  devices: DeviceService;
  feedback: FeedbackService;
  activity: ActivityService;
  memberships: MembershipService;
  admin: AdminService;
}

export function createUsersServices(context: UsersContext): UsersServices {
  const profiles = createProfileService(context);
  const memberships = createMembershipService(context);
  return {
    profiles,
    bodyMetrics: createBodyMetricsService(context, profiles),
    settings: createSettingsService(context),
    devices: createDeviceService(context),
    feedback: createFeedbackService(context),
    activity: createActivityService(context),
    memberships,
    admin: createAdminService(context, memberships),
  };
}
