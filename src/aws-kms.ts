/**
 * `kysely-field-encryption/aws-kms`: the AWS KMS key provider. A separate entry point so that
 * `@aws-sdk/client-kms` stays an optional peer dependency; the main entry never imports it.
 */
export {
  AWS_KMS_ID_PREFIX,
  type AwsKmsKeyDescription,
  type AwsKmsKeyProvider,
  type AwsKmsProviderOptions,
  awsKmsKeyProvider,
  encryptionContext as awsKmsEncryptionContext,
} from './keys/providers/aws-kms-provider.js'
