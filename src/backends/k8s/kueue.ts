import { ErrorCode, QwexError } from '../../errors.js';
import type { KubernetesOptions } from './manifest.js';
import type { Job } from '../../run/model.js';
import { KubernetesBackend } from './backend.js';

/**
 * The Kubernetes backend behind a Kueue LocalQueue: the same Job, created
 * suspended by qwex itself with the `kueue.x-k8s.io/queue-name` label, so
 * that it runs only once Kueue admits it, whether or not Kueue's webhook
 * would have suspended it. While it waits, the run's record says why (the
 * Workload's conditions) and where it stands in the queue; an eviction is
 * recorded as an attempt and the run waits again.
 */
export class KueueBackend extends KubernetesBackend {
  override readonly name: string = 'kueue';

  protected override options(job: Job): KubernetesOptions {
    const options = job.backendOptions as KubernetesOptions;
    if (!options.queue) {
      throw new QwexError(ErrorCode.Usage, 'no queue given for a kueue run', { hint: 'pass --queue NAME (a LocalQueue), or set backends.kueue.queue in qwex.yaml' });
    }
    return options;
  }
}
