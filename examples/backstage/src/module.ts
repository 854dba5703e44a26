/**
 * The backend module that installs `reconciler:request` in Backstage's scaffolder:
 * `backend.add(import('@reconciler/backstage-scaffolder'))`, with app-config
 *
 *     reconciler:
 *       baseUrl: https://reconciler.example.com
 *       token: ${RECONCILER_TOKEN}     # a token with the `request` scope
 */

import { coreServices, createBackendModule } from '@backstage/backend-plugin-api';
import { scaffolderActionsExtensionPoint } from '@backstage/plugin-scaffolder-node';
import { createReconcilerRequestAction } from './action';

export const reconcilerScaffolderModule = createBackendModule({
  pluginId: 'scaffolder',
  moduleId: 'reconciler',
  register(env) {
    env.registerInit({
      deps: { scaffolder: scaffolderActionsExtensionPoint, config: coreServices.rootConfig },
      async init({ scaffolder, config }) {
        scaffolder.addActions(
          createReconcilerRequestAction({
            baseUrl: config.getString('reconciler.baseUrl'),
            token: config.getString('reconciler.token'),
            pollIntervalMs: config.getOptionalNumber('reconciler.pollIntervalMs'),
          }),
        );
      },
    });
  },
});
