import { redactSecrets } from '../../errors.js';

/** A failed attempt: `permanent` when trying again cannot help (the receiver refused the request itself). */
export class DeliveryError extends Error {
  readonly permanent: boolean;
  readonly status: number | undefined;

  constructor(message: string, options: { permanent: boolean; status?: number }) {
    super(redactSecrets(message));
    this.name = 'DeliveryError';
    this.permanent = options.permanent;
    this.status = options.status;
  }
}
