export { createReconcilerRequestAction } from './action';
export type { RequestActionOptions } from './action';
export { ReconcilerClient, RequestRefused, FINAL_PHASES } from './client';
export type { Catalog, RequestBody, RequestOperation, Phase } from './client';
export { templateFromCatalog, formSchema } from './template';
export { reconcilerScaffolderModule as default } from './module';
