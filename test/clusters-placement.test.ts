/**
 * The placement rule on its own (server/placement.ts: a pure function of the
 * targets, the request and what the server knows of each cluster): which
 * targets fit, which wins, and the errors that say why none fits. The
 * end-to-end behaviour with two real (fake-API) clusters is clusters.test.ts.
 */
import { describe, expect, it } from 'vitest';
import type { Target } from '../server/config.js';
import { place, type PlacementView } from '../server/placement.js';

function target(name: string, fields: Partial<Target> = {}): Target {
  return { name, backend: 'kueue', queues: ['gpu'], labels: {}, weight: 1, anyImage: true, options: {}, ...fields };
}

function view(state: Record<string, { healthy?: boolean; pending?: number; running?: number }>): PlacementView {
  return {
    healthy: (t) => state[t.name]?.healthy !== false,
    pending: (t) => state[t.name]?.pending ?? 0,
    running: (t) => state[t.name]?.running ?? 0,
  };
}

describe('placement', () => {
  const a = target('a', { labels: { gpu: 'a100' }, weight: 3, queues: ['gpu', 'batch'] });
  const b = target('b', { labels: { gpu: 't4' }, weight: 1 });
  const drained = target('drained', { weight: 0 });
  const box = target('box', { backend: 'docker', queues: [] });
  const all = [a, b, drained, box];

  it('prefers the shortest queue per unit of weight, then the fewest running per weight, then the heavier, then the first', () => {
    expect(place(all, { queue: 'gpu' }, view({})).name).toBe('a');
    // a's queue of 3 at weight 3 is as short as b's 1 at weight 1: a has more running per weight.
    expect(place(all, { queue: 'gpu' }, view({ a: { pending: 3, running: 3 }, b: { pending: 1, running: 0 } })).name).toBe('b');
    expect(place(all, { queue: 'gpu' }, view({ a: { pending: 4 }, b: { pending: 1 } })).name).toBe('b');
    expect(place(all, { queue: 'gpu' }, view({ a: { pending: 2 }, b: { pending: 1 } })).name).toBe('a');
    expect(place([b, target('c')], { queue: 'gpu' }, view({})).name).toBe('b');
  });

  it('skips unhealthy clusters while another fits, and otherwise places the run on one (it waits there)', () => {
    expect(place(all, { queue: 'gpu' }, view({ a: { healthy: false } })).name).toBe('b');
    expect(place(all, { queue: 'gpu' }, view({ a: { healthy: false }, b: { healthy: false } })).name).toBe('a');
    expect(place(all, { cluster: 'a' }, view({ a: { healthy: false } })).name).toBe('a');
  });

  it('fits by queue, labels and backend; a weight of 0 only when named', () => {
    expect(place(all, { queue: 'batch' }, view({ a: { pending: 100 } })).name).toBe('a');
    expect(place(all, { labels: { gpu: 't4' } }, view({ b: { pending: 100 } })).name).toBe('b');
    expect(place(all, { backend: 'docker' }, view({})).name).toBe('box');
    expect(place(all, { target: 'drained' }, view({})).name).toBe('drained');
    expect(place([drained], {}, view({})).name).toBe('drained');
  });

  it('names a cluster by its target\'s name or by its Kubernetes context, which several targets may share', () => {
    const east = target('east-gpu', { context: 'east', queues: ['gpu'] });
    const eastCpu = target('east-cpu', { context: 'east', queues: ['cpu'] });
    const west = target('west', { context: 'west' });
    const clusters = [east, eastCpu, west];
    expect(place(clusters, { cluster: 'west' }, view({})).name).toBe('west');
    expect(place(clusters, { cluster: 'east', queue: 'cpu' }, view({})).name).toBe('east-cpu');
    expect(place(clusters, { cluster: 'east' }, view({ 'east-gpu': { pending: 4 } })).name).toBe('east-cpu');
    expect(place(clusters, { cluster: 'east-gpu' }, view({ 'east-gpu': { pending: 4 } })).name).toBe('east-gpu');
    expect(place(clusters, { target: 'east-cpu', cluster: 'east' }, view({})).name).toBe('east-cpu');
    expect(() => place(clusters, { target: 'west', cluster: 'east' }, view({}))).toThrow('target "west" is not on cluster east');
  });

  it('says what none of the targets has', () => {
    expect(() => place(all, { labels: { gpu: 'h100' } }, view({}))).toThrow(/no target on this server has labels gpu=h100/);
    expect(() => place(all, { queue: 'batch', labels: { gpu: 't4' } }, view({}))).toThrow(/no target on this server has queue batch and labels gpu=t4/);
    expect(() => place(all, { cluster: 'a', labels: { gpu: 't4' } }, view({}))).toThrow('target "a" has no label gpu=t4');
    expect(() => place(all, { cluster: 'z' }, view({}))).toThrow('no cluster "z" on this server');
    expect(() => place(all, { target: 'a', cluster: 'b' }, view({}))).toThrow('target "a" is not on cluster b');
    expect(() => place(all, { target: 'a', queue: 'cpu' }, view({}))).toThrow('queue "cpu" is not one of target "a"\'s');
    expect(() => place([], {}, view({}))).toThrow('this server has no targets configured');
  });
});
