/**
 * The broker's metrics, on the cloud's registry (cloud/src/metrics/metrics.ts): clients by role, messages in and
 * out by topic class (the topic kind of protocol/topics.ts), ACL denials and refused connections by reason. Label
 * values come from fixed lists only, never from client input, so cardinality stays bounded.
 */
import { Counter, Gauge, type Registry } from 'prom-client';

export interface BrokerMetrics {
  clients: Gauge<'role'>;
  messagesIn: Counter<'class'>;
  messagesOut: Counter<'class'>;
  authzDenied: Counter<'action' | 'reason'>;
  refused: Counter<'listener' | 'reason'>;
  connects: Counter<'listener' | 'role'>;
}

/** `clientsByRole` is read at scrape time (from Aedes' own client table, so the gauge cannot drift). */
export function createBrokerMetrics(registry: Registry, clientsByRole: () => Record<string, number>): BrokerMetrics {
  const existing = registry.getSingleMetric('mqtt_clients_connected');
  if (existing) throw new Error('broker metrics are already registered on this registry');
  return {
    clients: new Gauge({
      name: 'mqtt_clients_connected',
      help: 'MQTT clients connected to the cloud broker, by role',
      labelNames: ['role'] as const,
      registers: [registry],
      collect() {
        for (const [role, n] of Object.entries(clientsByRole())) this.set({ role }, n);
      },
    }),
    messagesIn: new Counter({
      name: 'mqtt_messages_in_total',
      help: 'PUBLISH packets accepted from clients, by topic class (protocol topic kind)',
      labelNames: ['class'] as const,
      registers: [registry],
    }),
    messagesOut: new Counter({
      name: 'mqtt_messages_out_total',
      help: 'Messages delivered to clients (live and retained), by topic class',
      labelNames: ['class'] as const,
      registers: [registry],
    }),
    authzDenied: new Counter({
      name: 'mqtt_authz_denied_total',
      help: 'PUBLISH, SUBSCRIBE and deliveries refused by the ACL, by reason',
      labelNames: ['action', 'reason'] as const,
      registers: [registry],
    }),
    refused: new Counter({
      name: 'mqtt_connections_refused_total',
      help: 'Connections refused or cut before or at CONNECT (frame guard, limits, authentication), by reason',
      labelNames: ['listener', 'reason'] as const,
      registers: [registry],
    }),
    connects: new Counter({
      name: 'mqtt_connects_total',
      help: 'Successful MQTT connections, by listener and role',
      labelNames: ['listener', 'role'] as const,
      registers: [registry],
    }),
  };
}
